/// The little XML S3 answers with (`ListBucketResult`, `Error`): elements, text and the five
/// predefined entities plus character references. No DTD, no namespaces beyond ignoring the
/// `xmlns` attribute: what S3 servers send. A reader of its own instead of FoundationXML, which
/// would tie every program linking the store to libxml2.
struct S3XML {
    struct Element {
        var name: String
        var text = ""
        var children: [Element] = []

        func child(_ name: String) -> Element? { children.first { $0.name == name } }
        func children(_ name: String) -> [Element] { children.filter { $0.name == name } }
        /// The text of the first child so named.
        subscript(_ name: String) -> String? { child(name)?.text }
    }

    struct Malformed: Error {
        var reason: String
    }

    /// The document's root element.
    static func parse(_ bytes: [UInt8]) throws(Malformed) -> Element {
        var reader = Reader(bytes: bytes)
        return try reader.document()
    }

    private struct Reader {
        let bytes: [UInt8]
        var at = 0

        mutating func document() throws(Malformed) -> Element {
            var stack: [Element] = []
            var root: Element?
            while at < bytes.count {
                if bytes[at] != UInt8(ascii: "<") {
                    let start = at
                    while at < bytes.count, bytes[at] != UInt8(ascii: "<") { at += 1 }
                    if !stack.isEmpty { stack[stack.count - 1].text += try decode(bytes[start..<at]) }
                    continue
                }
                if startsWith("<?") {
                    try skip(past: "?>")
                } else if startsWith("<!--") {
                    try skip(past: "-->")
                } else if startsWith("<![CDATA[") {
                    let start = at + 9
                    try skip(past: "]]>")
                    if !stack.isEmpty {
                        stack[stack.count - 1].text += String(decoding: bytes[start..<(at - 3)], as: UTF8.self)
                    }
                } else if startsWith("<!") {
                    try skip(past: ">")
                } else if startsWith("</") {
                    at += 2
                    let name = readName()
                    try skip(past: ">")
                    guard let element = stack.popLast(), element.name == name else {
                        throw Malformed(reason: "</\(name)> closes no open element")
                    }
                    if stack.isEmpty { root = element } else { stack[stack.count - 1].children.append(element) }
                } else {
                    at += 1
                    let name = readName()
                    guard !name.isEmpty else { throw Malformed(reason: "a tag without a name at byte \(at)") }
                    let tagStart = at
                    try skip(past: ">")
                    let element = Element(name: name)
                    if bytes[at - 2] == UInt8(ascii: "/") && at - 2 >= tagStart {
                        if stack.isEmpty { root = element } else { stack[stack.count - 1].children.append(element) }
                    } else {
                        stack.append(element)
                    }
                }
            }
            guard stack.isEmpty, let root else { throw Malformed(reason: "the document ends inside an element") }
            return root
        }

        private func startsWith(_ text: String) -> Bool {
            let prefix = Array(text.utf8)
            return at + prefix.count <= bytes.count && Array(bytes[at..<(at + prefix.count)]) == prefix
        }

        private mutating func skip(past text: String) throws(Malformed) {
            let end = Array(text.utf8)
            while at + end.count <= bytes.count {
                if Array(bytes[at..<(at + end.count)]) == end {
                    at += end.count
                    return
                }
                at += 1
            }
            throw Malformed(reason: "no \"\(text)\" before the end")
        }

        private mutating func readName() -> String {
            let start = at
            while at < bytes.count {
                let byte = bytes[at]
                if byte == UInt8(ascii: ">") || byte == UInt8(ascii: "/") || byte == UInt8(ascii: " ")
                    || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r")
                {
                    break
                }
                at += 1
            }
            return String(decoding: bytes[start..<at], as: UTF8.self)
        }

        /// Text with `&amp;`, `&lt;`, `&gt;`, `&quot;`, `&apos;`, `&#N;` and `&#xN;` replaced.
        private func decode(_ text: ArraySlice<UInt8>) throws(Malformed) -> String {
            guard text.contains(UInt8(ascii: "&")) else { return String(decoding: text, as: UTF8.self) }
            var result = ""
            var index = text.startIndex
            while index < text.endIndex {
                guard text[index] == UInt8(ascii: "&") else {
                    let start = index
                    while index < text.endIndex, text[index] != UInt8(ascii: "&") { index += 1 }
                    result += String(decoding: text[start..<index], as: UTF8.self)
                    continue
                }
                guard let semicolon = text[index...].firstIndex(of: UInt8(ascii: ";")) else {
                    throw Malformed(reason: "an unfinished entity")
                }
                let entity = String(decoding: text[(index + 1)..<semicolon], as: UTF8.self)
                switch entity {
                case "amp": result += "&"
                case "lt": result += "<"
                case "gt": result += ">"
                case "quot": result += "\""
                case "apos": result += "'"
                default:
                    let number: UInt32? =
                        entity.hasPrefix("#x")
                        ? UInt32(entity.dropFirst(2), radix: 16)
                        : entity.hasPrefix("#") ? UInt32(entity.dropFirst(1)) : nil
                    guard let number, let scalar = Unicode.Scalar(number) else {
                        throw Malformed(reason: "unknown entity &\(entity);")
                    }
                    result.unicodeScalars.append(scalar)
                }
                index = semicolon + 1
            }
            return result
        }
    }
}
