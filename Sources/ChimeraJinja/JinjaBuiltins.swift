import Foundation

// Python's value semantics (truthiness, str, repr, operators, string and dict methods, json.dumps)
// and jinja2's filters and tests, as chat templates use them. Strings index, slice and count by
// code point, as Python's do.

extension JinjaRuntime {
    typealias Value = JinjaValue

    static func typeName(_ value: Value) -> String {
        switch value {
        case .undefined: return "Undefined"
        case .none: return "NoneType"
        case .bool: return "bool"
        case .int: return "int"
        case .float: return "float"
        case .string: return "str"
        case .list: return "list"
        case .dict: return "dict"
        case .namespace: return "Namespace"
        case .function: return "function"
        case .macro: return "Macro"
        }
    }

    static func truthy(_ value: Value) -> Bool {
        switch value {
        case .undefined, .none: return false
        case .bool(let b): return b
        case .int(let i): return i != 0
        case .float(let d): return d != 0
        case .string(let s): return !s.isEmpty
        case .list(let l): return !l.isEmpty
        case .dict(let d): return !d.entries.isEmpty
        case .namespace, .function, .macro: return true
        }
    }

    // MARK: str and repr

    /// Python's str(), jinja2's output of a value (an undefined one prints nothing).
    static func str(_ value: Value) -> String {
        switch value {
        case .undefined: return ""
        case .string(let s): return s
        default: return repr(value)
        }
    }

    /// `depth`: how deep in a value being printed (a namespace may hold itself, through a list: past
    /// `maxDepth` levels the rest is "...", as Python prints a recursive list).
    static func repr(_ value: Value, depth: Int = 0) -> String {
        guard depth <= maxDepth else { return "..." }
        func inner(_ v: Value) -> String { repr(v, depth: depth + 1) }
        switch value {
        case .undefined: return "Undefined"  // (printed alone it is nothing, see str)
        case .none: return "None"
        case .bool(let b): return b ? "True" : "False"
        case .int(let i): return String(i)
        case .float(let d): return floatRepr(d)
        case .string(let s): return stringRepr(s)
        case .list(let items): return "[" + items.map(inner).joined(separator: ", ") + "]"
        case .dict(let d): return "{" + d.entries.map { inner($0.key) + ": " + inner($0.value) }.joined(separator: ", ") + "}"
        case .namespace(let n): return "<Namespace " + inner(.dict(n.attributes)) + ">"
        case .function(let f): return "<function \(f.name)>"
        case .macro(let m): return "<Macro '\(m.macro.name)'>"
        }
    }

    /// Python's float repr: the shortest round-trip digits, exponent form below 1e-4 and from 1e16.
    static func floatRepr(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        if d == 0 { return d.sign == .minus ? "-0.0" : "0.0" }
        // Swift's description is also the shortest round-trip form; take its digits and exponent.
        var text = "\(abs(d))"
        var exponent = 0
        if let e = text.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(text[text.index(after: e)...])!
            text = String(text[..<e])
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        let whole = String(parts[0]), fraction = parts.count > 1 ? String(parts[1]) : ""
        var digits = whole + fraction
        var pointAt = whole.count + exponent  // digits[0..<pointAt] before the point
        while digits.hasPrefix("0"), digits.count > 1 { digits.removeFirst(); pointAt -= 1 }
        while digits.hasSuffix("0"), digits.count > 1 { digits.removeLast() }
        let decimalExponent = pointAt - 1
        var out: String
        if decimalExponent < -4 || decimalExponent >= 16 {
            out = String(digits.first!)
            if digits.count > 1 { out += "." + digits.dropFirst() }
            out += "e" + (decimalExponent < 0 ? "-" : "+") + (abs(decimalExponent) < 10 ? "0" : "") + String(abs(decimalExponent))
        } else if pointAt <= 0 {
            out = "0." + String(repeating: "0", count: -pointAt) + digits
        } else if pointAt >= digits.count {
            out = digits + String(repeating: "0", count: pointAt - digits.count) + ".0"
        } else {
            out = String(digits.prefix(pointAt)) + "." + String(digits.dropFirst(pointAt))
        }
        return (d < 0 ? "-" : "") + out
    }

    static func stringRepr(_ s: String) -> String {
        let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String(quote)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if Character(scalar) == quote {
                    out += "\\" + String(quote)
                } else if !printable(scalar) {
                    let v = scalar.value
                    out += v <= 0xFF ? String(format: "\\x%02x", v) : v <= 0xFFFF ? String(format: "\\u%04x", v) : String(format: "\\U%08x", v)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + String(quote)
    }

    /// Python's str.isprintable for one code point.
    static func printable(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == " " { return true }
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator: return false
        default: return true
        }
    }

    // MARK: Equality, order, arithmetic

    static func number(_ value: Value) -> Double? {
        switch value {
        case .int(let i): return Double(i)
        case .float(let d): return d
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    static func integer(_ value: Value) -> Int? {
        switch value {
        case .int(let i): return i
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    static func equal(_ a: Value, _ b: Value) -> Bool {
        switch (a, b) {
        case (.undefined, .undefined), (.none, .none): return true
        case let (.string(x), .string(y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
        case let (.list(x), .list(y)): return x.count == y.count && zip(x, y).allSatisfy(equal)
        case let (.dict(x), .dict(y)):
            return x.entries.count == y.entries.count && x.entries.allSatisfy { e in y[value: e.key].map { equal(e.value, $0) } ?? false }
        case let (.namespace(x), .namespace(y)): return x === y
        default:
            if let x = integer(a), let y = integer(b) { return x == y }
            if let x = number(a), let y = number(b) { return x == y }
            return false
        }
    }

    static func less(_ a: Value, _ b: Value, _ op: String) throws -> Bool {
        switch (a, b) {
        case let (.string(x), .string(y)): return Array(x.unicodeScalars.map(\.value)).lexicographicallyPrecedes(y.unicodeScalars.map(\.value))
        case let (.list(x), .list(y)):
            for (p, q) in zip(x, y) where !equal(p, q) { return try less(p, q, op) }
            return x.count < y.count
        default:
            if let x = integer(a), let y = integer(b) { return x < y }
            if let x = number(a), let y = number(b) { return x < y }
            throw fail("'\(op)' not supported between instances of '\(typeName(a))' and '\(typeName(b))'")
        }
    }

    static func binary(_ op: String, _ a: Value, _ b: Value) throws -> Value {
        if case .undefined(let message) = a, !["==", "!=", "in", "not in"].contains(op) { throw fail(message) }
        if case .undefined(let message) = b, !["==", "!=", "in", "not in"].contains(op) { throw fail(message) }
        switch op {
        case "==": return .bool(equal(a, b))
        case "!=": return .bool(!equal(a, b))
        case "<": return .bool(try less(a, b, op))
        case ">": return .bool(try less(b, a, op))
        case "<=": return .bool(try !less(b, a, op))
        case ">=": return .bool(try !less(a, b, op))
        case "in": return .bool(try contains(b, a))
        case "not in": return .bool(try !contains(b, a))
        default: break
        }
        func unsupported() -> Failure {
            fail("unsupported operand type(s) for \(op): '\(typeName(a))' and '\(typeName(b))'")
        }
        switch (op, a, b) {
        case let ("+", .string(x), .string(y)):
            guard x.utf8.count + y.utf8.count <= maxTextBytes else { throw fail("a text of more than \(maxTextBytes) bytes") }
            return .string(x + y)
        case ("+", .string, _): throw fail("can only concatenate str (not \"\(typeName(b))\") to str")
        case let ("+", .list(x), .list(y)):
            guard x.count + y.count <= 10_000_000 else { throw fail("a list of more than 10000000 items") }
            return .list(x + y)
        case ("+", .list, _): throw fail("can only concatenate list (not \"\(typeName(b))\") to list")
        case let ("*", .string(x), _) where integer(b) != nil: return .string(String(repeating: x, count: max(0, try bounded(integer(b)!, x.count))))
        case let ("*", _, .string(y)) where integer(a) != nil: return .string(String(repeating: y, count: max(0, try bounded(integer(a)!, y.count))))
        case let ("*", .list(x), _) where integer(b) != nil:
            return .list(Array([[Value]](repeating: x, count: max(0, try bounded(integer(b)!, x.count))).joined()))
        case let ("*", _, .list(y)) where integer(a) != nil:
            return .list(Array([[Value]](repeating: y, count: max(0, try bounded(integer(a)!, y.count))).joined()))
        case ("%", .string, _): throw fail("string formatting with % is not supported; use ~ or filters")
        default: break
        }
        if let x = integer(a), let y = integer(b) {
            switch op {
            case "+", "-", "*":
                let (r, overflow) = op == "+" ? x.addingReportingOverflow(y) : op == "-" ? x.subtractingReportingOverflow(y) : x.multipliedReportingOverflow(by: y)
                guard !overflow else { throw fail("integer overflow in \(x) \(op) \(y)") }
                return .int(r)
            case "/":
                guard y != 0 else { throw fail("division by zero") }
                return .float(Double(x) / Double(y))
            case "//", "%":
                guard y != 0 else { throw fail("integer division or modulo by zero") }
                guard x != .min || y != -1 else { throw fail("integer overflow in \(x) \(op) \(y)") }
                var q = x / y, r = x % y
                if r != 0, (r < 0) != (y < 0) { q -= 1; r += y }
                return .int(op == "//" ? q : r)
            case "**":
                if y >= 0 {
                    var result = 1
                    for _ in 0..<min(y, 64) {
                        let (r, overflow) = result.multipliedReportingOverflow(by: x)
                        guard !overflow else { throw fail("integer overflow in \(x) ** \(y)") }
                        result = r
                    }
                    if y > 64, abs(x) > 1 { throw fail("integer overflow in \(x) ** \(y)") }
                    return .int(y > 64 && x == -1 ? (y % 2 == 0 ? 1 : -1) : result)
                }
                return .float(pow(Double(x), Double(y)))
            default: throw unsupported()
            }
        }
        if let x = number(a), let y = number(b) {
            switch op {
            case "+": return .float(x + y)
            case "-": return .float(x - y)
            case "*": return .float(x * y)
            case "/":
                guard y != 0 else { throw fail("float division by zero") }
                return .float(x / y)
            case "//", "%":
                guard y != 0 else { throw fail(op == "%" ? "float modulo" : "float floor division by zero") }
                // CPython's float divmod.
                var mod = fmod(x, y), div = (x - mod) / y
                if mod != 0 {
                    if (y < 0) != (mod < 0) { mod += y; div -= 1 }
                } else {
                    mod = Double(sign: y.sign, exponent: 0, significand: 0)
                }
                var floorDiv: Double
                if div != 0 {
                    floorDiv = div.rounded(.down)
                    if div - floorDiv > 0.5 { floorDiv += 1 }
                } else {
                    floorDiv = Double(sign: (x / y).sign, exponent: 0, significand: 0)
                }
                return .float(op == "//" ? floorDiv : mod)
            case "**":
                guard x != 0 || y >= 0 else { throw fail("0.0 cannot be raised to a negative power") }
                let p = pow(x, y)
                guard p.isFinite || !x.isFinite || !y.isFinite else { throw fail("(34, 'Numerical result out of range')") }
                return .float(p)
            default: throw unsupported()
            }
        }
        throw unsupported()
    }

    /// What a template may build: a chat prompt is a few hundred kilobytes; a template doubling a
    /// text in a loop would otherwise take the machine's memory.
    static let maxTextBytes = 64 << 20
    /// How deep values may nest (JSON messages nest a few levels): a list wrapped in itself a
    /// hundred thousand times would overflow the stack when printed, compared or freed.
    static let maxDepth = 500

    /// `children` as the items of a new list or dict, refused past `maxDepth` levels. Measuring
    /// walks the children's containers: the nodes visited count against `nestingBudget`, so that
    /// wrapping a large list again and again cannot take hours.
    mutating func nesting(_ children: [Value]) throws -> [Value] {
        var visited = 0
        func depth(_ v: Value, within budget: Int) -> Int {
            visited += 1
            guard budget > 0 else { return 1 }
            switch v {
            case .list(let items): return 1 + (items.map { depth($0, within: budget - 1) }.max() ?? 0)
            case .dict(let d): return 1 + (d.entries.map { depth($0.value, within: budget - 1) }.max() ?? 0)
            default: return 0
            }
        }
        for child in children {
            if case .list = child {} else if case .dict = child {} else { continue }
            if depth(child, within: Self.maxDepth) >= Self.maxDepth { throw Self.fail("values nested more than \(Self.maxDepth) deep") }
        }
        nestingBudget -= visited
        guard nestingBudget >= 0 else { throw Self.fail("the template built lists and dictionaries too large to check (more than 10000000 items walked)") }
        return children
    }

    /// A repetition count, refused when the result would pass 10 million items.
    static func bounded(_ count: Int, _ size: Int) throws -> Int {
        if size == 0 { return 0 }  // (empty whatever the count: `[] * 2**62` must not allocate 2**62 empty lists)
        guard count <= 0 || count <= 10_000_000 / size else { throw fail("a repetition of more than 10000000 items") }
        return count
    }

    static func contains(_ container: Value, _ item: Value) throws -> Bool {
        switch container {
        case .string(let s):
            guard case .string(let sub) = item else { throw fail("'in <string>' requires string as left operand, not \(typeName(item))") }
            return !occurrences(of: Array(sub.unicodeScalars), in: Array(s.unicodeScalars), overlapping: false, limit: 1).isEmpty
        case .list(let items): return items.contains { equal($0, item) }
        case .dict(let d): return d[value: item] != nil
        case .namespace(let n):
            guard case .string(let key) = item else { return false }
            return n.attributes[key] != nil
        case .undefined: return false
        default: throw fail("argument of type '\(typeName(container))' is not iterable")
        }
    }

    // MARK: Access

    static func iterate(_ value: Value) throws -> [Value] {
        switch value {
        case .list(let items): return items
        case .dict(let d): return d.entries.map(\.key)
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw fail("'\(typeName(value))' object is not iterable")
        }
    }

    /// jinja2's `obj.name`: the object's method or attribute first, then its item.
    static func attribute(_ object: Value, _ name: String) throws -> Value {
        if case .undefined(let message) = object { throw fail(message) }
        if let method = try method(object, name) { return method }
        switch object {
        case .dict(let d): return d[name] ?? .undefined("'dict object' has no attribute '\(name)'")
        case .namespace(let n): return n.attributes[name] ?? .undefined("'Namespace object' has no attribute '\(name)'")
        default: return .undefined("'\(typeName(object)) object' has no attribute '\(name)'")
        }
    }

    /// jinja2's `obj[key]`: the item first, then (for a string key) the attribute.
    static func item(_ object: Value, _ key: Value) throws -> Value {
        if case .undefined(let message) = object { throw fail(message) }
        switch (object, key) {
        case let (.list(items), _) where integer(key) != nil:
            let i = integer(key)!, at = i < 0 ? items.count + i : i
            return items.indices.contains(at) ? items[at] : .undefined("'list object' has no element \(i)")
        case let (.string(s), _) where integer(key) != nil:
            let scalars = Array(s.unicodeScalars), i = integer(key)!, at = i < 0 ? scalars.count + i : i
            return scalars.indices.contains(at) ? .string(String(scalars[at])) : .undefined("'str object' has no element \(i)")
        case let (.dict(d), _):
            if let value = d[value: key] { return value }
        case let (.namespace(n), .string(k)):
            if let value = n.attributes[k] { return value }
        default: break
        }
        if case .string(let name) = key { return try attribute(object, name) }
        return .undefined("'\(typeName(object)) object' has no element \(repr(key))")
    }

    static func slice(_ value: Value, _ start: Int?, _ stop: Int?, _ step: Int?) throws -> Value {
        let step = step ?? 1
        guard step != 0 else { throw fail("slice step cannot be zero") }
        func indices(_ count: Int) -> [Int] {
            func clamp(_ i: Int?, _ defaultValue: Int) -> Int {
                guard var i else { return defaultValue }
                if i < 0 { i += count }
                return step > 0 ? min(max(i, 0), count) : min(max(i, -1), count - 1)
            }
            let from = clamp(start, step > 0 ? 0 : count - 1), to = clamp(stop, step > 0 ? count : -1)
            return Array(Swift.stride(from: from, to: to, by: step))
        }
        switch value {
        case .list(let items): return .list(indices(items.count).map { items[$0] })
        case .string(let s):
            let scalars = Array(s.unicodeScalars)
            var out = String.UnicodeScalarView()
            for i in indices(scalars.count) { out.append(scalars[i]) }
            return .string(String(out))
        case .undefined(let message): throw fail(message)
        default: return .undefined("'\(typeName(value))' object is not subscriptable")  // (jinja2: Undefined)
        }
    }

    static func length(_ value: Value) throws -> Int {
        switch value {
        case .string(let s): return s.unicodeScalars.count
        case .list(let l): return l.count
        case .dict(let d): return d.entries.count
        case .namespace(let n): return n.attributes.entries.count
        case .undefined: return 0
        default: throw fail("object of type '\(typeName(value))' has no len()")
        }
    }

    // MARK: Methods

    static func function(_ name: String, _ body: @escaping @Sendable ([Value], [(String, Value)]) throws -> Value) -> Value {
        .function(JinjaFunction(name: name, call: body))
    }

    /// The method `name` of a string, dict or list, bound to it; nil when it has none.
    static func method(_ object: Value, _ name: String) throws -> Value? {
        @Sendable func argument(_ positional: [Value], _ keyword: [(String, Value)], _ index: Int, _ key: String) -> Value? {
            index < positional.count ? positional[index] : keyword.first { $0.0 == key }?.1
        }
        @Sendable func string(_ value: Value?, _ what: String) throws -> String? {
            switch value {
            case nil, .none?: return nil
            case .string(let s)?: return s
            case let other?: throw fail("\(what) must be a string, not \(typeName(other))")
            }
        }
        switch object {
        case .string(let s):
            switch name {
            case "strip", "lstrip", "rstrip":
                return function(name) { p, k in
                    .string(strip(s, chars: try string(argument(p, k, 0, "chars"), "\(name)() argument"), leading: name != "rstrip", trailing: name != "lstrip"))
                }
            case "upper": return function(name) { _, _ in .string(s.uppercased()) }
            case "lower": return function(name) { _, _ in .string(s.lowercased()) }
            case "title": return function(name) { _, _ in .string(title(s)) }
            case "capitalize": return function(name) { _, _ in .string(capitalize(s)) }
            case "startswith", "endswith":
                return function(name) { p, _ in
                    let candidates: [Value] = if case .list(let l)? = p.first { l } else { p.first.map { [$0] } ?? [] }
                    return .bool(try candidates.contains { c in
                        guard case .string(let affix) = c else { throw fail("\(name) first arg must be str or a tuple of str, not \(typeName(c))") }
                        return name == "startswith" ? s.unicodeScalars.starts(with: affix.unicodeScalars)
                            : s.unicodeScalars.reversed().starts(with: affix.unicodeScalars.reversed())
                    })
                }
            case "split", "rsplit":
                return function(name) { p, k in
                    let separator = try string(argument(p, k, 0, "sep"), "the separator")
                    let limit = argument(p, k, 1, "maxsplit").flatMap(integer) ?? -1
                    return .list(try split(s, separator: separator, limit: limit, fromRight: name == "rsplit").map { .string($0) })
                }
            case "splitlines": return function(name) { _, _ in .list(splitLines(s).map { .string($0) }) }
            case "replace":
                return function(name) { p, _ in
                    guard p.count >= 2, case .string(let old) = p[0], case .string(let new) = p[1] else { throw fail("replace() takes two strings") }
                    return .string(replace(s, old, new, count: p.count > 2 ? integer(p[2]) ?? -1 : -1))
                }
            case "find", "rfind", "count", "index", "rindex":
                return function(name) { p, _ in
                    guard case .string(let sub)? = p.first else { throw fail("\(name)() takes a string") }
                    let hay = Array(s.unicodeScalars), needle = Array(sub.unicodeScalars)
                    if name == "count" { return .int(occurrences(of: needle, in: hay, overlapping: false).count) }
                    let found = name.hasPrefix("r") ? occurrences(of: needle, in: hay, overlapping: true).last
                        : occurrences(of: needle, in: hay, overlapping: false, limit: 1).first
                    if found == nil, name.hasSuffix("index") { throw fail("substring not found") }
                    return .int(found ?? -1)
                }
            case "join":
                return function(name) { p, _ in
                    guard let items = p.first else { throw fail("join() takes an iterable") }
                    return .string(try iterate(items).map { item -> String in
                        guard case .string(let text) = item else { throw fail("sequence item: expected str instance, \(typeName(item)) found") }
                        return text
                    }.joined(separator: s))
                }
            case "isdigit", "isalpha", "isspace", "isalnum", "isupper", "islower":
                return function(name) { _, _ in
                    let scalars = s.unicodeScalars
                    switch name {
                    case "isdigit": return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.numericType == .decimal || $0.properties.numericType == .digit })
                    case "isalpha": return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.isAlphabetic })
                    case "isspace": return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.isWhitespace })
                    case "isalnum": return .bool(!scalars.isEmpty && scalars.allSatisfy { $0.properties.isAlphabetic || $0.properties.numericType != nil })
                    case "isupper": return .bool(s.contains { $0.isCased } && s.uppercased() == s)
                    default: return .bool(s.contains { $0.isCased } && s.lowercased() == s)
                    }
                }
            default: return nil
            }
        case .dict(let d):
            switch name {
            case "items": return function(name) { _, _ in .list(d.entries.map { .list([$0.key, $0.value]) }) }
            case "keys": return function(name) { _, _ in .list(d.entries.map(\.key)) }
            case "values": return function(name) { _, _ in .list(d.entries.map(\.value)) }
            case "copy": return function(name) { _, _ in .dict(d) }
            case "get":
                return function(name) { p, _ in
                    guard let key = p.first else { throw fail("get() takes a key") }
                    return d[value: key] ?? (p.count > 1 ? p[1] : .none)
                }
            case "update", "pop", "popitem", "setdefault", "clear":
                throw fail("access to attribute '\(name)' of 'dict' object is unsafe.")
            default: return nil
            }
        case .list(let items):
            switch name {
            case "index", "count":
                return function(name) { p, _ in
                    guard let x = p.first else { throw fail("\(name)() takes an argument") }
                    if name == "count" { return .int(items.filter { equal($0, x) }.count) }
                    guard let i = items.firstIndex(where: { equal($0, x) }) else { throw fail("\(repr(x)) is not in list") }
                    return .int(i)
                }
            case "append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear":
                throw fail("access to attribute '\(name)' of 'list' object is unsafe.")
            default: return nil
            }
        default: return nil
        }
    }

    /// Python's str.isspace for one code point: Unicode's white space and the separators \x1c–\x1f.
    static func pythonSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace || (0x1C...0x1F).contains(c.value) }

    static func strip(_ s: String, chars: String?, leading: Bool, trailing: Bool) -> String {
        let set = chars.map { Set($0.unicodeScalars) }
        func drop(_ c: Unicode.Scalar) -> Bool { set?.contains(c) ?? pythonSpace(c) }
        var scalars = Array(s.unicodeScalars)[...]
        if leading { while let f = scalars.first, drop(f) { scalars.removeFirst() } }
        if trailing { while let l = scalars.last, drop(l) { scalars.removeLast() } }
        return String(String.UnicodeScalarView(scalars))
    }

    static func title(_ s: String) -> String {
        var out = "", previousCased = false
        for c in s {
            out += previousCased ? c.lowercased() : c.uppercased()
            previousCased = c.isCased
        }
        return out
    }

    static func capitalize(_ s: String) -> String {
        guard let first = s.first else { return s }
        return first.uppercased() + s.dropFirst().lowercased()
    }

    static func split(_ s: String, separator: String?, limit: Int, fromRight: Bool) throws -> [String] {
        let scalars = Array(s.unicodeScalars)
        func text(_ slice: ArraySlice<Unicode.Scalar>) -> String { String(String.UnicodeScalarView(slice)) }
        guard let separator else {
            // Runs of whitespace, none empty; past `limit` splits the rest is one word, with the
            // whitespace at its far end kept (Python: ' a b '.split(None, 1) is ['a', 'b ']).
            var words: [ArraySlice<Unicode.Scalar>] = []
            if !fromRight {
                var i = 0
                while i < scalars.count {
                    while i < scalars.count, pythonSpace(scalars[i]) { i += 1 }
                    guard i < scalars.count else { break }
                    if limit >= 0, words.count == limit { words.append(scalars[i...]); break }
                    let start = i
                    while i < scalars.count, !pythonSpace(scalars[i]) { i += 1 }
                    words.append(scalars[start..<i])
                }
                return words.map(text)
            }
            var j = scalars.count
            while j > 0 {
                while j > 0, pythonSpace(scalars[j - 1]) { j -= 1 }
                guard j > 0 else { break }
                if limit >= 0, words.count == limit { words.append(scalars[..<j]); break }
                let end = j
                while j > 0, !pythonSpace(scalars[j - 1]) { j -= 1 }
                words.append(scalars[j..<end])
            }
            return words.reversed().map(text)
        }
        let sep = Array(separator.unicodeScalars)
        guard !sep.isEmpty else { throw fail("empty separator") }
        // Python cuts from the left, or for rsplit from the right (they differ where the separator overlaps itself).
        let maximum = limit >= 0 ? limit : Int.max
        let cuts = fromRight
            ? occurrences(of: sep.reversed(), in: scalars.reversed(), overlapping: false, limit: maximum).map { scalars.count - $0 - sep.count }.reversed()
            : occurrences(of: sep, in: scalars, overlapping: false, limit: maximum)
        var parts: [String] = []
        var start = 0
        for cut in cuts { parts.append(text(scalars[start..<cut])); start = cut + sep.count }
        parts.append(text(scalars[start...]))
        return parts
    }

    static func splitLines(_ s: String) -> [String] {
        var lines: [String] = []
        var current = String.UnicodeScalarView()
        let scalars = Array(s.unicodeScalars)
        var i = 0
        while i < scalars.count {
            let c = scalars[i]
            if c == "\r" || JinjaLexer.lineBreaks.contains(c.value) {
                lines.append(String(current)); current = String.UnicodeScalarView()
                if c == "\r", i + 1 < scalars.count, scalars[i + 1] == "\n" { i += 1 }
            } else {
                current.append(c)
            }
            i += 1
        }
        if !current.isEmpty { lines.append(String(current)) }
        return lines
    }

    static func replace(_ s: String, _ old: String, _ new: String, count: Int) -> String {
        var remaining = count < 0 ? Int.max : count
        let scalars = Array(s.unicodeScalars), o = Array(old.unicodeScalars)
        var out = String.UnicodeScalarView()
        if o.isEmpty {
            // Python puts the new text between every code point and at both ends.
            for c in scalars {
                if remaining > 0 { out.append(contentsOf: new.unicodeScalars); remaining -= 1 }
                out.append(c)
            }
            if remaining > 0 { out.append(contentsOf: new.unicodeScalars) }
            return String(out)
        }
        var i = 0
        for start in occurrences(of: o, in: scalars, overlapping: false, limit: remaining) {
            out.append(contentsOf: scalars[i..<start])
            out.append(contentsOf: new.unicodeScalars)
            i = start + o.count
        }
        out.append(contentsOf: scalars[i...])
        return String(out)
    }

    /// Where `needle` occurs in `hay` (Knuth–Morris–Pratt: linear, where a naive search takes the
    /// product of the lengths): every start, or left to right without overlaps; at most `limit`.
    static func occurrences(of needle: [Unicode.Scalar], in hay: [Unicode.Scalar], overlapping: Bool, limit: Int = .max) -> [Int] {
        guard !needle.isEmpty else { return Array((0...hay.count).prefix(limit)) }
        guard needle.count <= hay.count, limit > 0 else { return [] }
        var longestBorder = [Int](repeating: 0, count: needle.count)
        var k = 0
        for i in 1..<needle.count {
            while k > 0, needle[i] != needle[k] { k = longestBorder[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            longestBorder[i] = k
        }
        var found: [Int] = []
        k = 0
        for (i, c) in hay.enumerated() {
            while k > 0, c != needle[k] { k = longestBorder[k - 1] }
            if c == needle[k] { k += 1 }
            if k == needle.count {
                found.append(i - k + 1)
                if found.count == limit { break }
                k = overlapping ? longestBorder[k - 1] : 0
            }
        }
        return found
    }

    // MARK: json.dumps

    static func json(_ value: Value, indent: String?, itemSeparator: String, keySeparator: String, sortKeys: Bool, asciiOnly: Bool, level: Int = 0) throws -> String {
        func quoted(_ s: String) -> String {
            var out = "\""
            for scalar in s.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\r": out += "\\r"
                case "\t": out += "\\t"
                case "\u{08}": out += "\\b"
                case "\u{0C}": out += "\\f"
                default:
                    if scalar.value < 0x20 || (asciiOnly && scalar.value > 0x7E) {
                        if scalar.value > 0xFFFF {
                            let v = scalar.value - 0x10000
                            out += String(format: "\\u%04x\\u%04x", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF))
                        } else {
                            out += String(format: "\\u%04x", scalar.value)
                        }
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
            return out + "\""
        }
        func container(_ open: String, _ close: String, _ items: [String]) -> String {
            guard !items.isEmpty else { return open + close }
            guard let indent else { return open + items.joined(separator: itemSeparator) + close }
            let inner = "\n" + String(repeating: indent, count: level + 1), outer = "\n" + String(repeating: indent, count: level)
            return open + inner + items.joined(separator: itemSeparator + inner) + outer + close
        }
        func nested(_ v: Value) throws -> String {
            guard level < maxDepth else { throw fail("Circular reference detected (or values nested more than \(maxDepth) deep)") }
            return try json(v, indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys, asciiOnly: asciiOnly, level: level + 1)
        }
        switch value {
        case .none: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .float(let d): return d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : floatRepr(d)
        case .string(let s): return quoted(s)
        case .list(let items): return container("[", "]", try items.map(nested))
        case .dict(let d):
            // json.dumps writes keys as strings: a number as its repr, true/false/null as in JSON.
            func keyText(_ key: Value) -> String {
                switch key {
                case .string(let s): return s
                case .bool(let b): return b ? "true" : "false"
                case .none: return "null"
                default: return repr(key)
                }
            }
            let keyed = d.entries.map { (key: keyText($0.key), value: $0.value) }
            let entries = sortKeys ? keyed.sorted { $0.key.unicodeScalars.map(\.value).lexicographicallyPrecedes($1.key.unicodeScalars.map(\.value)) } : keyed
            return container("{", "}", try entries.map { quoted($0.key) + keySeparator + (try nested($0.value)) })
        case .namespace, .function, .macro, .undefined:
            throw fail("Object of type \(typeName(value)) is not JSON serializable")
        }
    }

    // MARK: Tests

    static func test(_ name: String, _ value: Value, _ arguments: [Value]) throws -> Bool {
        func other() throws -> Value {
            guard let first = arguments.first else { throw fail("the test '\(name)' needs an argument") }
            return first
        }
        switch name {
        case "defined": if case .undefined = value { return false }; return true
        case "undefined": if case .undefined = value { return true }; return false
        case "none": if case .none = value { return true }; return false
        case "boolean": if case .bool = value { return true }; return false
        case "true": if case .bool(true) = value { return true }; return false
        case "false": if case .bool(false) = value { return true }; return false
        case "integer": if case .int = value { return true }; return false
        case "float": if case .float = value { return true }; return false
        case "number": return number(value) != nil
        case "string": if case .string = value { return true }; return false
        case "mapping": if case .dict = value { return true }; return false
        case "iterable":
            switch value { case .list, .dict, .string, .undefined: return true; default: return false }
        case "sequence":
            switch value { case .list, .dict, .string: return true; default: return false }
        case "callable":
            switch value { case .function, .macro: return true; default: return false }
        case "odd", "even":
            guard let i = integer(value) else { throw fail("the test '\(name)' takes an integer, found \(typeName(value))") }
            return (i % 2 != 0) == (name == "odd")
        case "divisibleby":
            guard let i = integer(value), let n = integer(try other()), n != 0 else { throw fail("divisibleby takes integers (not 0)") }
            return n == -1 || i % n == 0  // (Int.min % -1 would trap)
        case "eq", "equalto", "==": return equal(value, try other())
        case "ne", "!=": return !equal(value, try other())
        case "lt", "lessthan", "<": return try less(value, try other(), "<")
        case "le", "<=": return try !less(try other(), value, "<=")
        case "gt", "greaterthan", ">": return try less(try other(), value, ">")
        case "ge", ">=": return try !less(value, try other(), ">=")
        case "in": return try contains(try other(), value)
        case "sameas":
            switch (value, try other()) {
            case (.none, .none): return true
            case let (.bool(a), .bool(b)): return a == b
            case let (.namespace(a), .namespace(b)): return a === b
            default: return false
            }
        // Python's islower/isupper: some cased character, none of the other case.
        case "lower": if case .string(let s) = value { return s.contains { $0.isCased } && s.lowercased() == s }; return false
        case "upper": if case .string(let s) = value { return s.contains { $0.isCased } && s.uppercased() == s }; return false
        case "escaped": return false
        case "filter": if case .string(let s) = value { return JinjaParser.filters.contains(s) }; return false
        case "test": if case .string(let s) = value { return JinjaParser.tests.contains(s) }; return false
        default: throw fail("No test named '\(name)' found.")
        }
    }

    // MARK: Filters

    /// An item's attribute as selectattr/map/sort/join read it ("a.b" goes a level down; dicts by key first).
    static func attributePath(_ value: Value, _ path: String) throws -> Value {
        var current = value
        for part in path.split(separator: ".") {
            if case .undefined = current { return current }
            current = try item(current, Int(part).map { .int($0) } ?? .string(String(part)))
        }
        return current
    }

    mutating func filter(_ name: String, _ value: Value, _ p: [Value], _ k: [(String, Value)]) throws -> Value {
        // jinja2's map and select family iterate only a true value: None (tools not given) is empty.
        if ["map", "select", "reject", "selectattr", "rejectattr"].contains(name), !Self.truthy(value) { return .list([]) }
        func arg(_ index: Int, _ key: String) -> Value? { index < p.count ? p[index] : k.first { $0.0 == key }?.1 }
        func flag(_ index: Int, _ key: String) -> Bool { arg(index, key).map(Self.truthy) ?? false }
        func text(_ v: Value) -> String { Self.str(v) }
        switch name {
        case "abs":
            switch value {
            case .int(let i):
                guard i != .min else { throw Self.fail("integer overflow in abs(\(i))") }
                return .int(abs(i))
            case .float(let d): return .float(abs(d))
            default: throw Self.fail("bad operand type for abs(): '\(Self.typeName(value))'")
            }
        case "capitalize": return .string(Self.capitalize(text(value)))
        case "count", "length": return .int(try Self.length(value))
        case "d", "default":
            let fallback = arg(0, "default_value") ?? .string("")
            if case .undefined = value { return fallback }
            return flag(1, "boolean") && !Self.truthy(value) ? fallback : value
        case "dictsort":
            guard case .dict(let d) = value else { throw Self.fail("dictsort takes a dict, found \(Self.typeName(value))") }
            let byValue = (arg(1, "by").map(text) ?? "key") == "value", caseSensitive = flag(0, "case_sensitive")
            func keyOf(_ e: (key: Value, value: Value)) -> Value {
                let v = byValue ? e.value : e.key
                if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
                return v
            }
            var entries = d.entries
            try Self.stableSort(&entries) { try Self.less(keyOf($0), keyOf($1), "<") }
            if flag(2, "reverse") { entries.reverse() }
            return .list(entries.map { .list([$0.key, $0.value]) })
        case "e", "escape":
            var out = ""
            for c in text(value) {
                switch c {
                case "&": out += "&amp;"
                case "<": out += "&lt;"
                case ">": out += "&gt;"
                case "\"": out += "&#34;"
                case "'": out += "&#39;"
                default: out.append(c)
                }
            }
            return .string(out)
        case "first":
            let items = try Self.iterate(value)
            return items.first ?? .undefined("No first item, sequence was empty.")
        case "last":
            let items = try Self.iterate(value)
            return items.last ?? .undefined("No last item, sequence was empty.")
        case "float":
            let fallback = arg(0, "default") ?? .float(0)
            if case .undefined(let message) = value { throw Self.fail(message) }
            switch value {
            case .float: return value
            case .int(let i): return .float(Double(i))
            case .bool(let b): return .float(b ? 1 : 0)
            case .string(let s): return Self.pythonFloat(s).map { .float($0) } ?? fallback
            default: return fallback
            }
        case "int":
            let fallback = arg(0, "default") ?? .int(0)
            if case .undefined(let message) = value { throw Self.fail(message) }
            switch value {
            case .int: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .float(let d): return d.isFinite && abs(d) < 9e18 ? .int(Int(d)) : fallback
            case .string(let s):
                // int(s), else int(float(s)), as jinja2's do_int.
                let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
                if !t.hasPrefix("_"), !t.hasSuffix("_"), !t.contains("__"), let i = Int(t.replacingOccurrences(of: "_", with: "")) { return .int(i) }
                if let d = Self.pythonFloat(s), d.isFinite, abs(d) < 9e18 { return .int(Int(d)) }
                return fallback
            default: return fallback
            }
        case "indent":
            // jinja2's do_indent: the text and a line break, split as str.splitlines; every line but
            // the first (unless `first`) indented, empty ones only with `blank`.
            let width: String
            switch arg(0, "width") {
            case .string(let s)?: width = s
            case let other?: width = String(repeating: " ", count: min(max(0, Self.integer(other) ?? 4), 1_000))
            case nil: width = "    "
            }
            let first = flag(1, "first"), blank = flag(2, "blank")
            switch value {
            case .list, .dict, .undefined, .namespace: throw Self.fail("indent takes text, found \(Self.typeName(value))")
            default: break
            }
            var lines = Self.splitLines(text(value) + "\n")
            var out: String
            if blank {
                out = lines.joined(separator: "\n" + width)
            } else {
                out = lines.isEmpty ? "" : lines.removeFirst()
                if !lines.isEmpty { out += "\n" + lines.map { $0.isEmpty ? $0 : width + $0 }.joined(separator: "\n") }
            }
            return .string(first ? width + out : out)
        case "items":
            switch value {
            case .dict(let d): return .list(d.entries.map { .list([$0.key, $0.value]) })
            case .undefined: return .list([])
            default: throw Self.fail("items takes a mapping, found \(Self.typeName(value))")
            }
        case "join":
            let separator = arg(0, "d").map(text) ?? ""
            var items = try Self.iterate(value)
            if let attribute = arg(1, "attribute") { items = try items.map { try Self.attributePath($0, text(attribute)) } }
            return .string(items.map(text).joined(separator: separator))
        case "list": return .list(try Self.iterate(value))
        case "lower": return .string(text(value).lowercased())
        case "upper": return .string(text(value).uppercased())
        case "title":
            // jinja2's do_title: words begin after whitespace, "-", "(", "{", "[" or "<" (not
            // after an apostrophe, as str.title has it); each word capitalized.
            var out = "", startsWord = true
            for c in text(value) {
                out += startsWord ? c.uppercased() : c.lowercased()
                startsWord = c.isWhitespace || "-({[<".contains(c)
            }
            return .string(out)
        case "map":
            let items = try Self.iterate(value)
            if let attribute = k.first(where: { $0.0 == "attribute" })?.1 {
                let fallback = k.first { $0.0 == "default" }?.1
                return .list(try items.map { item in
                    let v = try Self.attributePath(item, text(attribute))
                    if case .undefined = v, let fallback { return fallback }
                    return v
                })
            }
            guard case .string(let filterName)? = p.first else { throw Self.fail("map needs a filter name or attribute=") }
            guard JinjaParser.filters.contains(filterName) else { throw Self.fail("no filter named '\(filterName)'") }
            return .list(try items.map { try filter(filterName, $0, Array(p.dropFirst()), k) })
        case "max", "min":
            // jinja2's: the item whose key (its attribute, strings lowercased unless case_sensitive) is largest/smallest.
            let items = try Self.iterate(value), caseSensitive = flag(0, "case_sensitive"), attribute = arg(1, "attribute").map(text)
            func key(_ item: Value) throws -> Value {
                let v = try attribute.map { try Self.attributePath(item, $0) } ?? item
                if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
                return v
            }
            guard var best = items.first else { return .undefined("No aggregated item, sequence was empty.") }
            for item in items.dropFirst() where try name == "max" ? Self.less(key(best), key(item), "<") : Self.less(key(item), key(best), "<") { best = item }
            return best
        case "reject", "select":
            let items = try Self.iterate(value)
            return .list(try items.filter { item in
                let passes = try p.first.map { t -> Bool in
                    guard case .string(let testName) = t else { throw Self.fail("\(name) takes a test name") }
                    return try Self.test(testName, item, Array(p.dropFirst()))
                } ?? Self.truthy(item)
                return passes == (name == "select")
            })
        case "rejectattr", "selectattr":
            let items = try Self.iterate(value)
            guard case .string(let attribute)? = p.first else { throw Self.fail("\(name) takes an attribute name") }
            return .list(try items.filter { item in
                let v = try Self.attributePath(item, attribute)
                let passes = try p.count > 1 ? {
                    guard case .string(let testName) = p[1] else { throw Self.fail("\(name) takes a test name") }
                    guard JinjaParser.tests.contains(testName) else { throw Self.fail("no test named '\(testName)'") }
                    return try Self.test(testName, v, Array(p.dropFirst(2)))
                }() : Self.truthy(v)
                return passes == (name == "selectattr")
            })
        case "replace":
            guard p.count >= 2 else { throw Self.fail("replace takes the old and the new text") }
            return .string(Self.replace(text(value), text(p[0]), text(p[1]), count: p.count > 2 ? Self.integer(p[2]) ?? -1 : (k.first { $0.0 == "count" }?.1).flatMap(Self.integer) ?? -1))
        case "reverse":
            if case .string(let s) = value { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .list(try Self.iterate(value).reversed())
        case "round":
            guard let x = Self.number(value) else { throw Self.fail("round takes a number, found \(Self.typeName(value))") }
            let precision = arg(0, "precision").flatMap(Self.integer) ?? 0, method = arg(1, "method").map(text) ?? "common"
            guard ["common", "floor", "ceil"].contains(method) else { throw Self.fail("method must be 'common', 'ceil' or 'floor'") }
            // Python's round() keeps an int an int.
            if method == "common", precision >= 0, case .int = value { return value }
            let scale = pow(10, Double(precision))
            // "common" is Python's round(): halves to even.
            let rule: FloatingPointRoundingRule = method == "floor" ? .down : method == "ceil" ? .up : .toNearestOrEven
            return .float((x * scale).rounded(rule) / scale)
        case "safe": return value
        case "sort":
            var items = try Self.iterate(value)
            let caseSensitive = flag(1, "case_sensitive"), attribute = arg(2, "attribute").map(text)
            func keyOf(_ v: Value) throws -> Value {
                var key = try attribute.map { try Self.attributePath(v, $0) } ?? v
                if !caseSensitive, case .string(let s) = key { key = .string(s.lowercased()) }
                return key
            }
            try Self.stableSort(&items) { try Self.less(keyOf($0), keyOf($1), "<") }
            if flag(0, "reverse") { items.reverse() }
            return .list(items)
        case "string": return .string(text(value))
        case "sum":
            var items = try Self.iterate(value)
            if let attribute = arg(0, "attribute") { items = try items.map { try Self.attributePath($0, text(attribute)) } }
            return try items.reduce(arg(1, "start") ?? .int(0)) { try Self.binary("+", $0, $1) }
        case "tojson":
            // transformers' tojson: json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
            let ascii = flag(0, "ensure_ascii")
            var indent: String?
            switch arg(1, "indent") {
            case .int(let n)?: indent = String(repeating: " ", count: min(max(0, n), 1_000))
            case .string(let s)?: indent = s
            default: indent = nil
            }
            var itemSeparator = indent == nil ? ", " : ",", keySeparator = ": "
            if case .list(let pair)? = arg(2, "separators"), pair.count == 2, case .string(let a) = pair[0], case .string(let b) = pair[1] {
                itemSeparator = a; keySeparator = b
            }
            return .string(try Self.json(value, indent: indent, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: flag(3, "sort_keys"), asciiOnly: ascii))
        case "trim":
            return .string(Self.strip(text(value), chars: arg(0, "chars").map(text), leading: true, trailing: true))
        case "unique":
            // jinja2's: by a set of keys (strings compared lowercased unless case_sensitive), first kept.
            let caseSensitive = flag(0, "case_sensitive"), attribute = arg(1, "attribute").map(text)
            var seen: Set<String> = [], kept: [Value] = []
            for item in try Self.iterate(value) {
                var key = try attribute.map { try Self.attributePath(item, $0) } ?? item
                if !caseSensitive, case .string(let s) = key { key = .string(s.lowercased()) }
                if seen.insert(try Self.hashKey(key)).inserted { kept.append(item) }
            }
            return .list(kept)
        case "wordcount":
            // jinja2's: runs of \w (letters, digits, underscore).
            var count = 0, inWord = false
            for c in text(value).unicodeScalars {
                let word = c == "_" || c.properties.isAlphabetic || c.properties.numericType != nil
                if word, !inWord { count += 1 }
                inWord = word
            }
            return .int(count)
        default: throw Self.fail("No filter named '\(name)' found.")
        }
    }

    /// Python's float(s): decimal digits with an optional exponent, or inf/nan, around whitespace
    /// (Swift's Double also reads hexadecimal, which Python's does not).
    static func pythonFloat(_ s: String) -> Double? {
        let t = s.trimmingCharacters(in: .whitespacesAndNewlines)
        let lower = t.lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "+-"))
        if ["inf", "infinity", "nan"].contains(lower) { return Double(t.lowercased().replacingOccurrences(of: "infinity", with: "inf")) }
        guard !t.isEmpty, t.allSatisfy({ $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) }) else { return nil }
        return Double(t)
    }

    /// A value's identity in a Python set: equal values (1, 1.0 and true) share one; lists and dicts
    /// are unhashable.
    static func hashKey(_ value: Value) throws -> String {
        switch value {
        case .string(let s): return "s" + s
        case .int(let i): return "n\(i)"
        case .bool(let b): return b ? "n1" : "n0"
        case .float(let d): return d == d.rounded() && abs(d) < 9e18 ? "n\(Int(d))" : "f\(d)"
        case .none: return "none"
        case .undefined: return "undefined"
        case .namespace(let n): return "o\(ObjectIdentifier(n))"
        case .macro(let m): return "o\(ObjectIdentifier(m))"
        case .function(let f): return "function " + f.name
        case .list, .dict: throw fail("unhashable type: '\(typeName(value))'")
        }
    }

    /// Python's sorted(): stable, by `less`.
    static func stableSort<T>(_ items: inout [T], by less: (T, T) throws -> Bool) throws {
        var error: Error?
        let indexed = items.enumerated().sorted { a, b in
            do {
                if try less(a.element, b.element) { return true }
                if try less(b.element, a.element) { return false }
            } catch let e { error = e }
            return a.offset < b.offset
        }
        if let error { throw error }
        items = indexed.map(\.element)
    }
}
