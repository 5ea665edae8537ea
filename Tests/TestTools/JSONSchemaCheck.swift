import Foundation

/// The JSON schemas as docs/json-schemas.md documents them, and a check of a document against
/// its schema: every field printed is documented with the type it has, and every field the
/// schema requires is in every object that should hold it.
public struct JSONSchemaCheck: Sendable {
    public struct Field: Sendable {
        public var type: String
        public var optional: Bool
    }

    /// Schema key ("chpox.chain/1", or "chpox.checkpoint/1 event generation") -> path -> field.
    public let schemas: [String: [String: Field]]

    /// Reads docs/json-schemas.md from the package root.
    public init(documentation path: String = JSONSchemaCheck.documentationPath) throws {
        var schemas: [String: [String: Field]] = [:]
        var current: String?
        for line in try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init) {
            if line.hasPrefix("## ") {
                // "## chpox.checkpoint/1 (event generation)"
                let words = line.dropFirst(3).replacingOccurrences(of: "(", with: "").replacingOccurrences(
                    of: ")", with: ""
                )
                .split(separator: " ").map(String.init)
                current = words.first?.hasPrefix("chpox.") == true ? words.joined(separator: " ") : nil
                continue
            }
            guard let current, line.hasPrefix("| `") else { continue }
            let cells = line.split(separator: "|", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard cells.count >= 4 else { continue }
            let path = cells[1].trimmingCharacters(in: CharacterSet(charactersIn: "`"))
            let type = cells[2]
            schemas[current, default: [:]][path] = Field(
                type: type.hasSuffix("?") ? String(type.dropLast()) : type, optional: type.hasSuffix("?"))
        }
        self.schemas = schemas
    }

    public static var documentationPath: String {
        // Tests/TestTools/JSONSchemaCheck.swift -> the package root.
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("docs/json-schemas.md").path
    }

    /// Problems with `document` (one JSON object as text); empty when it matches its schema.
    public func problems(_ document: String) -> [String] {
        guard let object = try? JSONSerialization.jsonObject(with: Data(document.utf8)) as? [String: Any] else {
            return ["not a JSON object: \(document.prefix(200))"]
        }
        guard let name = object["schema"] as? String else { return ["no schema field"] }
        // Streams document one table per event; the events that end a stream share "ending".
        let event = (object["event"] as? String).map { " event " + $0 } ?? ""
        let key = [name, name + event, name + " event ending"].first { schemas[$0] != nil } ?? name + event
        guard let schema = schemas[key] else { return ["schema \(key) is not documented in docs/json-schemas.md"] }
        var problems: [String] = []
        check(object, path: "", schema: schema, problems: &problems)
        return problems.map { "\(key): \($0)" }
    }

    private func check(_ object: [String: Any], path: String, schema: [String: Field], problems: inout [String]) {
        let prefix = path.isEmpty ? "" : path + "."
        for (key, value) in object {
            let child = prefix + key
            guard let field = schema[child] else {
                problems.append("\(child) is printed but not documented")
                continue
            }
            check(value, path: child, field: field, schema: schema, problems: &problems)
        }
        for (documented, field) in schema where !field.optional && documented.hasPrefix(prefix) {
            let rest = documented.dropFirst(prefix.count)
            if !rest.contains(".") && !rest.contains("[") && object[String(rest)] == nil {
                problems.append("\(documented) is documented as always present but is missing")
            }
        }
    }

    private func check(_ value: Any, path: String, field: Field, schema: [String: Field], problems: inout [String]) {
        let actual = Self.jsonType(value)
        let matches =
            actual == field.type || (field.type == "number" && actual == "integer")
            || (field.type == "map" && actual == "object")
        guard matches else {
            problems.append("\(path) is \(actual), documented as \(field.type)")
            return
        }
        if let array = value as? [Any] {
            // Arrays of objects document their elements' fields (`x[].y`), arrays of values the
            // elements themselves (`x[]`).
            let elementFields = schema.keys.contains { $0.hasPrefix(path + "[].") }
            guard let element = schema[path + "[]"] ?? (elementFields ? Field(type: "object", optional: false) : nil)
            else {
                if !array.isEmpty { problems.append("\(path)[] (the elements) is not documented") }
                return
            }
            for item in array { check(item, path: path + "[]", field: element, schema: schema, problems: &problems) }
        } else if let object = value as? [String: Any], field.type == "object" {
            check(object, path: path, schema: schema, problems: &problems)
        }
    }

    static func jsonType(_ value: Any) -> String {
        if value is NSNull { return "null" }
        if value is String { return "string" }
        if value is [Any] { return "array" }
        if value is [String: Any] { return "object" }
        if let number = value as? NSNumber {
            if "\(Swift.type(of: value))".contains("Boolean") { return "boolean" }
            let kind = String(cString: number.objCType)
            return kind == "d" || kind == "f" ? "number" : "integer"
        }
        return "unknown"
    }
}
