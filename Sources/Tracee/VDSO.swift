#if canImport(Glibc)
import Glibc
#endif
import Syscall

/// A vDSO read from its bytes: the functions it exports, found the way a dynamic linker finds
/// them (the ELF header, its program headers, PT_DYNAMIC's DT_SYMTAB, DT_STRTAB and DT_HASH or
/// DT_GNU_HASH for the count), not through section headers, which a vDSO need not keep.
/// Offsets are from the vDSO's first byte, which is where the kernel maps its ELF header: a
/// pointer a process holds into its vDSO is its start plus one of these.
public struct VDSO: Sendable, Equatable {
    /// An exported function: its name as the symbol table has it (`__vdso_clock_gettime`,
    /// `clock_gettime`: the kernel exports both, at one offset), its entry and its length.
    public struct Symbol: Sendable, Equatable, Hashable {
        public var name: String
        public var offset: UInt64
        public var size: UInt64

        public init(name: String, offset: UInt64, size: UInt64) {
            (self.name, self.offset, self.size) = (name, offset, size)
        }
    }

    /// Its bytes, whole (a page multiple: what the mapping holds).
    public let bytes: [UInt8]
    /// Its exported functions, by offset then name.
    public let symbols: [Symbol]

    public var size: Int { bytes.count }

    /// The symbol called `name`, if it exports one.
    public func symbol(_ name: String) -> Symbol? { symbols.first { $0.name == name } }

    /// Why bytes are not a vDSO chpox can read.
    public struct Malformed: Error, Sendable, CustomStringConvertible {
        public var reason: String
        public var description: String { "not a vDSO chpox can read: \(reason)" }
    }

    // ELF64 constants and offsets (elf.h), named where they are used.
    static let elfMagic: [UInt8] = [0x7f, 0x45, 0x4c, 0x46]
    static let classELF64: UInt8 = 2
    static let littleEndian: UInt8 = 1
    static let programHeaderDynamic: UInt32 = 2  // PT_DYNAMIC
    static let programHeaderLoad: UInt32 = 1  // PT_LOAD
    static let dynamicHash: UInt64 = 4  // DT_HASH
    static let dynamicStringTable: UInt64 = 5  // DT_STRTAB
    static let dynamicSymbolTable: UInt64 = 6  // DT_SYMTAB
    static let dynamicStringTableSize: UInt64 = 10  // DT_STRSZ
    static let dynamicGNUHash: UInt64 = 0x6fff_fef5  // DT_GNU_HASH
    static let symbolSize = 24  // sizeof(Elf64_Sym)
    static let functionType: UInt8 = 2  // STT_FUNC
    static let globalBinding: UInt8 = 1  // STB_GLOBAL
    static let weakBinding: UInt8 = 2  // STB_WEAK

    public init(bytes: [UInt8]) throws(Malformed) {
        self.bytes = bytes
        symbols = try Self.exportedFunctions(bytes)
    }

    static func exportedFunctions(_ bytes: [UInt8]) throws(Malformed) -> [Symbol] {
        func fail(_ reason: String) -> Malformed { Malformed(reason: reason) }
        guard bytes.count >= 64, Array(bytes[0..<4]) == elfMagic else { throw fail("no ELF header") }
        guard bytes[4] == classELF64, bytes[5] == littleEndian else { throw fail("not a little-endian ELF64 object") }
        func word<T: FixedWidthInteger>(_ at: UInt64, _: T.Type) throws(Malformed) -> T {
            guard at <= UInt64(bytes.count), UInt64(bytes.count) - at >= UInt64(MemoryLayout<T>.size) else {
                throw fail("offset \(at) is outside its \(bytes.count) bytes")
            }
            return bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: Int(at), as: T.self) }
        }
        let programHeaders = try word(32, UInt64.self)  // e_phoff
        let programHeaderSize = UInt64(try word(54, UInt16.self))  // e_phentsize
        let programHeaderCount = UInt64(try word(56, UInt16.self))  // e_phnum
        // Addresses in the dynamic section are virtual; the vDSO's one PT_LOAD maps them to
        // offsets (vaddr - p_vaddr + p_offset).
        var dynamic: (offset: UInt64, size: UInt64)?
        var load: (offset: UInt64, address: UInt64, size: UInt64)?
        for k in 0..<programHeaderCount {
            let header = programHeaders + k * programHeaderSize
            let type = try word(header, UInt32.self)
            let offset = try word(header + 8, UInt64.self)
            let address = try word(header + 16, UInt64.self)
            let fileSize = try word(header + 32, UInt64.self)
            if type == programHeaderDynamic { dynamic = (offset, fileSize) }
            if type == programHeaderLoad, load == nil { load = (offset, address, fileSize) }
        }
        guard let dynamic, let load else { throw fail("no PT_DYNAMIC or PT_LOAD program header") }
        func offset(ofAddress address: UInt64) throws(Malformed) -> UInt64 {
            guard address >= load.address, address - load.address < load.size else {
                throw fail("address 0x\(String(address, radix: 16)) is outside its PT_LOAD")
            }
            return address - load.address + load.offset
        }
        var entries: [UInt64: UInt64] = [:]
        var at = dynamic.offset
        while at + 16 <= dynamic.offset + dynamic.size {
            let tag = try word(at, UInt64.self)
            if tag == 0 { break }  // DT_NULL
            if entries[tag] == nil { entries[tag] = try word(at + 8, UInt64.self) }
            at += 16
        }
        guard let symbolAddress = entries[dynamicSymbolTable], let stringAddress = entries[dynamicStringTable] else {
            throw fail("its dynamic section has no DT_SYMTAB or DT_STRTAB")
        }
        let symbolTable = try offset(ofAddress: symbolAddress)
        let stringTable = try offset(ofAddress: stringAddress)
        let stringTableSize = entries[dynamicStringTableSize] ?? (UInt64(bytes.count) - stringTable)
        let count: UInt64
        if let hash = entries[dynamicHash] {
            count = UInt64(try word(try offset(ofAddress: hash) + 4, UInt32.self))  // nchain
        } else if let gnuHash = entries[dynamicGNUHash] {
            count = try gnuHashSymbolCount(try offset(ofAddress: gnuHash), word)
        } else {
            throw fail("its dynamic section has neither DT_HASH nor DT_GNU_HASH")
        }
        guard count <= UInt64(bytes.count / symbolSize) else { throw fail("\(count) symbols do not fit its bytes") }
        var symbols: [Symbol] = []
        for k in 0..<count {
            let entry = symbolTable + k * UInt64(symbolSize)
            let nameOffset = UInt64(try word(entry, UInt32.self))
            let info = try word(entry + 4, UInt8.self)
            let section = try word(entry + 6, UInt16.self)
            let value = try word(entry + 8, UInt64.self)
            let size = try word(entry + 16, UInt64.self)
            guard info & 0xf == functionType, [globalBinding, weakBinding].contains(info >> 4), section != 0 else {
                continue
            }
            guard nameOffset < stringTableSize else { throw fail("symbol \(k)'s name is outside DT_STRTAB") }
            let start = Int(stringTable + nameOffset)
            guard start < bytes.count, let end = bytes[start...].firstIndex(of: 0) else {
                throw fail("symbol \(k)'s name is not ended")
            }
            let entryOffset = try offset(ofAddress: value)
            guard entryOffset < UInt64(bytes.count) else { throw fail("symbol \(k) is outside its bytes") }
            symbols.append(
                Symbol(name: String(decoding: bytes[start..<end], as: UTF8.self), offset: entryOffset, size: size))
        }
        return symbols.sorted { ($0.offset, $0.name) < ($1.offset, $1.name) }
    }

    /// The number of symbols a DT_GNU_HASH table covers: past the highest bucket's chain,
    /// whose last entry has its low bit set.
    static func gnuHashSymbolCount(
        _ table: UInt64, _ word: (UInt64, UInt32.Type) throws(Malformed) -> UInt32
    ) throws(Malformed) -> UInt64 {
        let buckets = UInt64(try word(table, UInt32.self))
        let firstSymbol = UInt64(try word(table + 4, UInt32.self))
        let bloomWords = UInt64(try word(table + 8, UInt32.self))
        let bucketTable = table + 16 + bloomWords * 8
        var last: UInt64 = 0
        for k in 0..<buckets { last = max(last, UInt64(try word(bucketTable + k * 4, UInt32.self))) }
        guard last >= firstSymbol else { return firstSymbol }
        let chains = bucketTable + buckets * 4
        var index = last
        while try word(chains + (index - firstSymbol) * 4, UInt32.self) & 1 == 0 { index += 1 }
        return index + 1
    }
}

/// The kernel's pages of a process as the kernel laid them out: the vDSO and the vvar pages it
/// reads (`[vvar]`, and `[vvar_vclock]` since 6.13), each at an offset from the vDSO's start
/// that the vDSO's code has built in.
public struct KernelPagesLayout: Sendable, Equatable {
    public struct Part: Sendable, Equatable {
        public var name: String
        /// From the vDSO's start (negative: below it).
        public var offset: Int64
        public var size: UInt64
    }

    public var vdso: VDSO
    /// Every part, vDSO included, lowest first.
    public var parts: [Part]

    /// The names of the pages that belong to the vDSO (`[vsyscall]` is fixed and not one).
    public static let names = ["[vvar]", "[vvar_vclock]", "[vdso]"]

    /// The span of the parts, from the vDSO's start: [lowest offset, highest end).
    public var span: Range<Int64> {
        (parts.map(\.offset).min() ?? 0)..<(parts.map { $0.offset + Int64($0.size) }.max() ?? 0)
    }

    public init(vdso: VDSO, parts: [Part]) {
        self.vdso = vdso
        self.parts = parts.sorted { $0.offset < $1.offset }
    }

    /// This process's own (`ld-chpox`'s, and so every process's on this kernel): nil when it
    /// has no vDSO (booted with vdso=0).
    public static func current() throws -> KernelPagesLayout? {
        let regions = try MemoryRegion.of(CurrentProcess.id)
        guard let vdso = regions.first(where: { $0.path == "[vdso]" }),
            let base = UnsafeRawPointer(bitPattern: UInt(vdso.start))
        else { return nil }
        let bytes = [UInt8](UnsafeRawBufferPointer(start: base, count: Int(vdso.size)))
        return KernelPagesLayout(
            vdso: try VDSO(bytes: bytes),
            parts: regions.filter { names.contains($0.path) }.map {
                Part(name: $0.path, offset: Int64(bitPattern: $0.start &- vdso.start), size: $0.size)
            })
    }
}
