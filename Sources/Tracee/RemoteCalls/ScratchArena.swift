/// Memory of another process lent to the system calls run inside it, for their arguments and
/// answers (a path, a struct, an output buffer). Slots are handed out from the bottom up,
/// never overlap, and never pass the end: a request that does not fit throws instead of
/// writing over a neighbour. `mark`/`release(to:)` give slots back in stack order.
public struct ScratchArena: Sendable, Equatable {
    /// The first byte lent, in the other process.
    public let base: UInt64
    /// How many bytes are lent.
    public let size: Int
    /// Bytes handed out so far (from `base`).
    public private(set) var used = 0

    public init(base: UInt64, size: Int) {
        self.base = base
        self.size = size
    }

    /// No memory at all: for calls whose arguments are all in registers.
    public static let none = ScratchArena(base: 0, size: 0)

    /// Bytes still free.
    public var available: Int { size - used }

    /// A slot of `count` bytes aligned to `alignment` (a power of two); its address.
    public mutating func allocate(_ count: Int, alignment: Int = 16) throws(ScratchError) -> UInt64 {
        precondition(alignment > 0 && alignment & (alignment - 1) == 0, "alignment must be a power of two")
        let misalignment = Int((base &+ UInt64(used)) & UInt64(alignment - 1))
        let start = used + (misalignment == 0 ? 0 : alignment - misalignment)
        guard count >= 0, start <= size, count <= size - start else {
            throw ScratchError(requested: count, available: max(0, size - start), size: size)
        }
        used = start + count
        return base + UInt64(start)
    }

    /// Where the next slot would start; give it to `release(to:)` to free every slot after it.
    public var mark: Int { used }

    /// Frees every slot handed out since `mark`.
    public mutating func release(to mark: Int) {
        precondition(mark >= 0 && mark <= used, "release to a mark that was not taken")
        used = mark
    }
}

/// A scratch request that does not fit.
public struct ScratchError: Error, Sendable, Equatable, CustomStringConvertible {
    public var requested: Int
    public var available: Int
    public var size: Int

    public init(requested: Int, available: Int, size: Int) {
        self.requested = requested
        self.available = available
        self.size = size
    }

    public var description: String {
        "scratch memory exhausted: \(requested) bytes asked, \(available) of \(size) left"
    }
}
