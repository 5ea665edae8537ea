#if canImport(Glibc)
import Glibc
#endif
import Store
import Syscall
import Tracee

/// Writes a generation as an ELF core file, as the kernel would have dumped the process at
/// that instant: `gdb <executable> FILE` opens it with its threads, registers and memory. Any
/// generation of a chain can be inspected this way, without restarting anything.
///
/// Layout (x86-64, ELF64 little endian): the ELF header, one PT_NOTE and one PT_LOAD per
/// mapping; the notes are NT_PRPSINFO, NT_AUXV, NT_FILE, then per thread (the main thread
/// first, which gdb takes as the current one) NT_PRSTATUS, NT_FPREGSET and NT_X86_XSTATE.
/// Each PT_LOAD holds the mapping's bytes: stored pages from the chain, the rest from the
/// mapping's file (clean pages), or zero. The file is sparse: zero pages are holes.
public enum CoreFile {
    public struct Summary: Sendable {
        public var threads: Int
        public var segments: Int
        public var storedPages: Int
        public var filePages: Int
        public var bytes: Int64
    }

    public static func write(_ image: ProcessImage, map: PageMap, store: Store, to path: String) throws -> Summary {
        let loads = image.mappings.filter { $0.backing != .vsyscall }
        let notes = notesSection(image, mappings: loads)
        let headerSize = 64 + 56 * (1 + loads.count)
        let notesOffset = headerSize
        var offset = Page.alignUp(notesOffset + notes.count)
        var segmentOffsets: [Int] = []
        for mapping in loads {
            segmentOffsets.append(offset)
            offset += Int(mapping.end - mapping.start)
        }
        let total = offset

        var header = BinaryWriter()
        // e_ident: magic, ELFCLASS64, ELFDATA2LSB, EV_CURRENT, ELFOSABI_NONE.
        header.append(bytes: [0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0] + [UInt8](repeating: 0, count: 8))
        header.append(UInt16(4))  // ET_CORE
        header.append(UInt16(62))  // EM_X86_64
        header.append(UInt32(1))  // EV_CURRENT
        header.append(UInt64(0))  // e_entry
        header.append(UInt64(64))  // e_phoff
        header.append(UInt64(0))  // e_shoff
        header.append(UInt32(0))  // e_flags
        header.append(UInt16(64))  // e_ehsize
        header.append(UInt16(56))  // e_phentsize
        header.append(UInt16(1 + loads.count))
        header.append(UInt16(64))  // e_shentsize
        header.append(UInt16(0))  // e_shnum
        header.append(UInt16(0))  // e_shstrndx
        // PT_NOTE
        header.append(UInt32(4)); header.append(UInt32(0))
        header.append(UInt64(notesOffset)); header.append(UInt64(0)); header.append(UInt64(0))
        header.append(UInt64(notes.count)); header.append(UInt64(0)); header.append(UInt64(4))
        for (mapping, segmentOffset) in zip(loads, segmentOffsets) {
            var flags: UInt32 = 0  // PF_R, PF_W, PF_X
            if mapping.protection.contains(.read) { flags |= 4 }
            if mapping.protection.contains(.write) { flags |= 2 }
            if mapping.protection.contains(.execute) { flags |= 1 }
            let size = mapping.end - mapping.start
            // The kernel's own pages (vvar) are not in the image: described, not filled.
            let fileSize = mapping.backing == .vvar ? 0 : size
            header.append(UInt32(1)); header.append(flags)  // PT_LOAD
            header.append(UInt64(segmentOffset)); header.append(mapping.start); header.append(UInt64(0))
            header.append(fileSize); header.append(size); header.append(UInt64(Page.size))  // p_align
        }

        // A new file, 0600, in place of whatever is at `path` only once complete: an existing
        // file keeps neither its owner nor its mode, and a symlink there is replaced, never
        // followed (root's process memory must not land in a file another user can read).
        let replacement: ReplacementFile
        do { replacement = try ReplacementFile(replacing: path) } catch {
            throw CheckpointError.output(path: path, reason: "\(error)")
        }
        defer { replacement.discard() }
        let file = replacement.descriptor
        var summary = Summary(
            threads: image.threads.count, segments: loads.count, storedPages: 0, filePages: 0, bytes: Int64(total))
        do throws(Errno) {
            try file.setSize(Int64(total))
            try header.bytes.withRawBytes { (raw) throws(Errno) in try file.writeAll(raw, at: 0) }
            try notes.withRawBytes { (raw) throws(Errno) in try file.writeAll(raw, at: Int64(notesOffset)) }
            // Clean pages of file mappings, from their files.
            let page = UnsafeMutableRawBufferPointer.allocate(pages: 1)
            defer { page.deallocate() }
            for (mapping, segmentOffset) in zip(loads, segmentOffsets)
            where (mapping.backing == .privateFile || mapping.backing == .sharedFile)
                && !mapping.path.hasSuffix(" (deleted)")
            {
                guard let source = try? FileDescriptor.open(mapping.path, [.readOnly, .closeOnExec]) else { continue }
                defer { source.close() }
                var address = mapping.start
                while address < mapping.end {
                    let got = try source.readFully(into: page, at: Int64(mapping.offset + (address - mapping.start)))
                    if got == 0 { break }
                    if got < Page.size {
                        UnsafeMutableRawBufferPointer(rebasing: page[got...]).initializeMemory(
                            as: UInt8.self, repeating: 0)
                    }
                    try file.writeAll(
                        UnsafeRawBufferPointer(page), at: Int64(segmentOffset) + Int64(address - mapping.start))
                    summary.filePages += 1
                    address += UInt64(Page.size)
                }
            }
        } catch {
            throw CheckpointError.output(path: path, reason: "\(error)")
        }
        // Stored pages over them: what the process had written.
        let starts = loads.map(\.start)
        try store.reader().readPages(map) { entry, bytes in
            let address = Page.address(of: entry.page)
            var low = 0, high = starts.count
            while low < high {
                let middle = (low + high) / 2
                if starts[middle] <= address { low = middle + 1 } else { high = middle }
            }
            guard low > 0, address < loads[low - 1].end else { return }
            let mapping = loads[low - 1]
            if entry.chunk == .zeroPage && !mapping.isFileBacked {
                return
            }
            do {
                try file.writeAll(bytes, at: Int64(segmentOffsets[low - 1]) + Int64(address - mapping.start))
            } catch {
                throw CheckpointError.output(path: path, reason: "\(error)")
            }
            summary.storedPages += 1
        }
        do { try replacement.commit() } catch { throw CheckpointError.output(path: path, reason: "\(error)") }
        return summary
    }

    // MARK: Notes

    static func notesSection(_ image: ProcessImage, mappings: [ProcessImage.Mapping]) -> [UInt8] {
        var notes = BinaryWriter()
        notes.note("CORE", 3, prpsinfo(image))
        var auxv = BinaryWriter()
        for word in image.addressSpace.auxv { auxv.append(word) }
        notes.note("CORE", 6, auxv.bytes)
        notes.note("CORE", 0x4649_4c45, fileNote(mappings))
        for thread in image.threads {
            let xstate = [UInt8](thread.xstate)
            notes.note("CORE", 1, prstatus(thread, image: image))
            notes.note("CORE", 2, Array(xstate.prefix(512)) + [UInt8](repeating: 0, count: max(0, 512 - xstate.count)))
            if !xstate.isEmpty { notes.note("LINUX", 0x202, xstate) }
        }
        return notes.bytes
    }

    /// struct elf_prstatus (336 bytes on x86-64).
    static func prstatus(_ thread: ProcessImage.ThreadImage, image: ProcessImage) -> [UInt8] {
        var b = BinaryWriter()
        b.append(UInt32(0)); b.append(UInt32(0)); b.append(UInt32(0))  // pr_info: signo, code, errno
        b.append(UInt16(0)); b.append(UInt16(0))  // pr_cursig, padding
        b.append(UInt64(0))  // pr_sigpend
        b.append(thread.signalMask)  // pr_sighold
        b.append(UInt32(bitPattern: thread.tid)); b.append(UInt32(0)); b.append(UInt32(bitPattern: image.pid));
        b.append(UInt32(bitPattern: image.pid))
        b.append(bytes: [UInt8](repeating: 0, count: 64))  // utime, stime, cutime, cstime
        for word in thread.registers.words { b.append(word) }
        b.append(UInt32(thread.xstate.isEmpty ? 0 : 1))  // pr_fpvalid
        b.append(UInt32(0))
        return b.bytes
    }

    /// struct elf_prpsinfo (136 bytes on x86-64).
    static func prpsinfo(_ image: ProcessImage) -> [UInt8] {
        var b = BinaryWriter()
        b.append(bytes: [0, UInt8(ascii: "S"), 0, 0]); b.append(UInt32(0))
        b.append(UInt64(0))  // pr_flag
        b.append(image.credentials.user.real); b.append(image.credentials.group.real)
        b.append(UInt32(bitPattern: image.pid)); b.append(UInt32(0)); b.append(UInt32(bitPattern: image.pid));
        b.append(UInt32(bitPattern: image.pid))
        let name = String(image.executable.split(separator: "/").last ?? "")
        b.append(bytes: fixed(Array(name.utf8), 16))
        b.append(bytes: fixed(Array(image.command.joined(separator: " ").utf8), 80))
        return b.bytes
    }

    /// NT_FILE: the file-backed mappings, so that a debugger finds the libraries.
    static func fileNote(_ mappings: [ProcessImage.Mapping]) -> [UInt8] {
        let files = mappings.filter { $0.path.hasPrefix("/") }
        var b = BinaryWriter()
        b.append(UInt64(files.count)); b.append(UInt64(Page.size))  // count, page size (the unit of the offsets)
        for mapping in files {
            b.append(mapping.start); b.append(mapping.end); b.append(Page.number(of: mapping.offset))
        }
        for mapping in files { b.append(bytes: Array(mapping.path.utf8) + [0]) }
        return b.bytes
    }

    static func fixed(_ bytes: [UInt8], _ count: Int) -> [UInt8] {
        Array(bytes.prefix(count - 1)) + [UInt8](repeating: 0, count: count - min(bytes.count, count - 1))
    }
}

extension BinaryWriter {
    /// An ELF note: namesz, descsz, type, name (NUL-terminated, padded to 4), desc (padded).
    fileprivate mutating func note(_ name: String, _ type: UInt32, _ desc: [UInt8]) {
        let nameBytes = Array(name.utf8) + [0]
        append(UInt32(nameBytes.count)); append(UInt32(desc.count)); append(type)
        append(bytes: nameBytes); pad(toMultipleOf: 4)
        append(bytes: desc); pad(toMultipleOf: 4)
    }
}
