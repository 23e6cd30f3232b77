import Foundation

// Rendering a parsed template with Python's and jinja2's semantics as far as chat templates reach
// them: Python's truthiness, `str()` and `repr()`, integer and float arithmetic, string methods,
// jinja2's Undefined (prints nothing, is false, refuses attribute access), per-iteration loop scopes
// (hence `namespace()`), the sandbox's immutable lists and dicts, and transformers' globals
// (`raise_exception`, `strftime_now`, `namespace`, `dict`) and its `tojson` (json.dumps).

/// A value a template sees or makes.
public indirect enum JinjaValue: Sendable {
    /// An undefined name or a missing attribute, with the error to give if it is used (jinja2's
    /// Undefined: it prints as nothing, is false and iterates as empty; its attributes are errors).
    case undefined(String)
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case list([JinjaValue])
    /// A dictionary in insertion order (JSON objects are); keys are strings, or numbers, booleans
    /// or none in a template's own literals.
    case dict(JinjaDict)
    case namespace(JinjaNamespace)
    case function(JinjaFunction)
    /// A `{% macro %}`: called, it renders its body in the caller's runtime.
    case macro(JinjaMacroValue)
}

public struct JinjaDict: Sendable {
    public private(set) var entries: [(key: JinjaValue, value: JinjaValue)]
    /// Entries whose keys are known to differ (no search for repeats).
    init(unique entries: [(key: String, value: JinjaValue)]) { self.entries = entries.map { (.string($0.key), $0.value) } }

    public init(_ entries: [(String, JinjaValue)]) { self.init(keyed: entries.map { (.string($0.0), $0.1) }) }

    /// Keys as values: a repeated key (as Python compares them: 1, 1.0 and true are one) keeps its
    /// first place and takes the last value.
    init(keyed entries: [(JinjaValue, JinjaValue)]) {
        var out: [(key: JinjaValue, value: JinjaValue)] = []
        for (key, value) in entries {
            if let at = out.firstIndex(where: { JinjaRuntime.equal($0.key, key) }) { out[at].value = value } else { out.append((key, value)) }
        }
        self.entries = out
    }

    public subscript(key: String) -> JinjaValue? { self[value: .string(key)] }
    subscript(value key: JinjaValue) -> JinjaValue? { entries.first { JinjaRuntime.equal($0.key, key) }?.value }
}

public final class JinjaNamespace: @unchecked Sendable {
    var attributes: JinjaDict
    init(_ attributes: JinjaDict) { self.attributes = attributes }
}

public final class JinjaMacroValue: @unchecked Sendable {
    let macro: JinjaMacro
    /// The scope it was defined in (what its body sees besides its parameters).
    let scope: JinjaScope
    init(_ macro: JinjaMacro, _ scope: JinjaScope) { self.macro = macro; self.scope = scope }
}

public struct JinjaFunction: Sendable {
    let name: String
    let call: @Sendable (_ positional: [JinjaValue], _ keyword: [(String, JinjaValue)]) throws -> JinjaValue
}

extension JinjaTemplate {
    /// The template rendered with `context` as its variables (transformers passes `messages`,
    /// `add_generation_prompt`, the tokenizer's named special tokens and any extra keyword);
    /// `now` is what `strftime_now` formats.
    public func render(_ context: [String: JinjaValue], now: Date = Date()) throws(JinjaError) -> String {
        let globals = JinjaScope(parent: nil)
        for (name, value) in JinjaRuntime.globals(now: now) { globals.variables[name] = value }
        let scope = JinjaScope(parent: globals)
        for (name, value) in context { scope.variables[name] = value }
        var runtime = JinjaRuntime()
        var out = ""
        do {
            _ = try runtime.run(body, in: scope, into: &out)
        } catch let error as JinjaError {
            throw error
        } catch let error as JinjaRuntime.Failure {
            throw .render(line: runtime.line, message: error.message)
        } catch {
            throw .render(line: runtime.line, message: "\(error)")
        }
        return out
    }
}

final class JinjaScope {
    var variables: [String: JinjaValue] = [:]
    let parent: JinjaScope?
    init(parent: JinjaScope?) { self.parent = parent }
    func lookup(_ name: String) -> JinjaValue? { variables[name] ?? parent?.lookup(name) }
}

struct JinjaRuntime {
    struct Failure: Error { let message: String }
    enum Flow { case normal, breakLoop, continueLoop }

    /// The line of the tag being run, for errors.
    var line = 1
    /// Macros call into the runtime: bounds recursion (a template calling itself forever).
    var depth = 0
    /// Loop iterations so far: a template looping over ranges inside ranges would otherwise run for
    /// hours (a chat template makes a few thousand at most).
    var iterations = 0
    static let maxIterations = 1_000_000
    /// Nodes `nesting` may still walk.
    var nestingBudget = 10_000_000

    static func fail(_ message: String) -> Failure { Failure(message: message) }

    static func globals(now: Date) -> [String: JinjaValue] {
        func function(_ name: String, _ body: @escaping @Sendable ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue) -> JinjaValue {
            .function(JinjaFunction(name: name, call: body))
        }
        return [
            "raise_exception": function("raise_exception") { positional, _ in
                throw JinjaError.raised(positional.first.map(JinjaRuntime.str) ?? "")
            },
            "strftime_now": function("strftime_now") { positional, _ in
                guard case .string(let format)? = positional.first else { throw fail("strftime_now() takes a format string") }
                return .string(strftime(format, now))
            },
            "namespace": function("namespace") { positional, keyword in
                var entries: [(JinjaValue, JinjaValue)] = []
                if let first = positional.first {
                    guard case .dict(let d) = first else { throw fail("namespace() takes a dict or keyword arguments") }
                    entries = d.entries.map { ($0.key, $0.value) }
                }
                return .namespace(JinjaNamespace(JinjaDict(keyed: entries + keyword.map { (.string($0.0), $0.1) })))
            },
            "dict": function("dict") { positional, keyword in
                var entries: [(JinjaValue, JinjaValue)] = []
                if let first = positional.first {
                    guard case .dict(let d) = first else { throw fail("dict() takes a dict or keyword arguments") }
                    entries = d.entries.map { ($0.key, $0.value) }
                }
                return .dict(JinjaDict(keyed: entries + keyword.map { (.string($0.0), $0.1) }))
            },
            "range": function("range") { positional, _ in
                let ints = try positional.map { v -> Int in
                    guard case .int(let i) = v else { throw fail("range() takes integers, found \(typeName(v))") }
                    return i
                }
                let (start, stop, step) = ints.count == 1 ? (0, ints[0], 1) : ints.count == 2 ? (ints[0], ints[1], 1)
                    : ints.count == 3 ? (ints[0], ints[1], ints[2]) : (0, 0, 0)
                guard step != 0 else { throw fail("range() takes 1 to 3 integers, the step not 0") }
                // (In Double: Int arithmetic on extreme bounds would trap.)
                let length = max(0, ((Double(stop) - Double(start)) / Double(step)).rounded(.up))
                guard length <= 100_000 else { throw fail("range() longer than 100000 items") }
                return .list(Swift.stride(from: start, to: stop, by: step).map { .int($0) })
            },
        ]
    }

    /// C's strftime over the local time, as Python's datetime.now().strftime.
    static func strftime(_ format: String, _ date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970)
        var parts = tm()
        localtime_r(&seconds, &parts)
        // strftime gives 0 when the buffer is too small (or the text empty): grow it a few times.
        for size in [256, 4096, 65536, 1 << 20] {
            var buffer = [CChar](repeating: 0, count: size)
            let count = Foundation.strftime(&buffer, buffer.count, format, &parts)
            if count > 0 || size == 1 << 20 { return String(decoding: buffer[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        }
        return ""
    }

    // MARK: Statements

    mutating func run(_ nodes: [JinjaNode], in scope: JinjaScope, into out: inout String) throws -> Flow {
        for node in nodes {
            if node.line > 0 { line = node.line }
            switch node.kind {
            case .text(let text):
                out += text
                guard out.utf8.count <= Self.maxTextBytes else { throw Self.fail("the template wrote more than \(Self.maxTextBytes) bytes") }
            case .output(let expr):
                out += Self.str(try eval(expr, scope))
                guard out.utf8.count <= Self.maxTextBytes else { throw Self.fail("the template wrote more than \(Self.maxTextBytes) bytes") }
            case let .branches(branches, otherwise):
                var taken = false
                for branch in branches where try Self.truthy(eval(branch.condition, scope)) {
                    taken = true
                    let flow = try run(branch.body, in: scope, into: &out)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try run(otherwise, in: scope, into: &out)
                    if flow != .normal { return flow }
                }
            case let .loop(targets, iterable, filter, body, otherwise):
                try runLoop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise, scope: scope, out: &out)
            case let .assign(target, value):
                let result = try eval(value, scope)
                switch target {
                case .names(let names):
                    if names.count == 1 {
                        scope.variables[names[0]] = result
                    } else {
                        let items = try Self.iterate(result)
                        guard items.count == names.count else { throw Self.fail("cannot unpack \(items.count) values into \(names.count) names") }
                        for (name, item) in zip(names, items) { scope.variables[name] = item }
                    }
                case let .attribute(object, name):
                    guard case .namespace(let namespace)? = scope.lookup(object) else {
                        throw Self.fail("can only set an attribute of a namespace, and '\(object)' is not one")
                    }
                    guard !name.hasPrefix("_") else { throw Self.fail("a namespace attribute cannot start with '_': \(name)") }
                    namespace.attributes = JinjaDict(keyed: namespace.attributes.entries.map { ($0.key, $0.value) } + [(.string(name), result)])
                }
            case let .assignBlock(name, body):
                // The body is a frame of its own in jinja2: what it sets stays inside.
                var text = ""
                _ = try run(body, in: JinjaScope(parent: scope), into: &text)
                scope.variables[name] = .string(text)
            case .macro(let macro):
                scope.variables[macro.name] = .macro(JinjaMacroValue(macro, scope))
            case .breakLoop: return .breakLoop
            case .continueLoop: return .continueLoop
            case .generation(let body):
                let flow = try run(body, in: scope, into: &out)
                if flow != .normal { return flow }
            case let .callBlock(caller, callee, arguments):
                guard case .macro(let m) = try eval(callee, scope) else { throw Self.fail("{% call %} calls a macro") }
                let (positional, keyword) = try evalArguments(arguments, scope)
                // The body sees the scope of the call, as a macro its definition's.
                out += Self.str(try callMacro(m.macro, scope: m.scope, positional, keyword, caller: .macro(JinjaMacroValue(caller, scope))))
            case let .filterBlock(name, arguments, body):
                var text = ""
                let flow = try run(body, in: JinjaScope(parent: scope), into: &text)
                let (positional, keyword) = try evalArguments(arguments, scope)
                out += Self.str(try filter(name, .string(text), positional, keyword))
                if flow != .normal { return flow }
            }
        }
        return .normal
    }

    mutating func runLoop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode],
                          scope: JinjaScope, out: inout String) throws {
        let loopLine = line
        var items = try Self.iterate(try eval(iterable, scope))
        func bind(_ item: JinjaValue, into inner: JinjaScope) throws {
            if targets.count == 1 { inner.variables[targets[0]] = item; return }
            let parts = try Self.iterate(item)
            guard parts.count == targets.count else { throw Self.fail("cannot unpack \(parts.count) values into \(targets.count) loop variables") }
            for (name, part) in zip(targets, parts) { inner.variables[name] = part }
        }
        if let filter {
            items = try items.filter { item in
                let inner = JinjaScope(parent: scope)
                try bind(item, into: inner)
                return Self.truthy(try eval(filter, inner))
            }
        }
        if items.isEmpty {
            _ = try run(otherwise, in: JinjaScope(parent: scope), into: &out)  // (the loop's frame, as jinja2's)
            return
        }
        for (index, item) in items.enumerated() {
            line = loopLine
            iterations += 1
            guard iterations <= Self.maxIterations else { throw Self.fail("the template ran more than \(Self.maxIterations) loop iterations") }
            let inner = JinjaScope(parent: scope)
            try bind(item, into: inner)
            let count = items.count
            var entries: [(key: String, value: JinjaValue)] = [
                ("index", .int(index + 1)), ("index0", .int(index)), ("revindex", .int(count - index)),
                ("revindex0", .int(count - index - 1)), ("first", .bool(index == 0)), ("last", .bool(index == count - 1)),
                ("length", .int(count)), ("depth", .int(1)), ("depth0", .int(0)),
                ("previtem", index > 0 ? items[index - 1] : .undefined("there is no previous item")),
                ("nextitem", index + 1 < count ? items[index + 1] : .undefined("there is no next item")),
            ]
            entries.append(("cycle", .function(JinjaFunction(name: "loop.cycle") { positional, _ in
                guard !positional.isEmpty else { throw JinjaRuntime.fail("loop.cycle() needs at least one value") }
                return positional[index % positional.count]
            })))
            inner.variables["loop"] = .dict(JinjaDict(unique: entries))
            let flow = try run(body, in: inner, into: &out)
            if flow == .breakLoop { break }
        }
    }

    mutating func callMacro(_ macro: JinjaMacro, scope definition: JinjaScope, _ positional: [JinjaValue], _ keyword: [(String, JinjaValue)],
                            caller: JinjaValue? = nil) throws -> JinjaValue {
        guard depth < 200 else { throw Self.fail("macro \(macro.name) nested more than 200 deep") }
        guard positional.count <= macro.parameters.count else {
            throw Self.fail("macro '\(macro.name)' takes \(macro.parameters.count) arguments, given \(positional.count)")
        }
        let inner = JinjaScope(parent: definition)
        if let caller { inner.variables["caller"] = caller }
        for (i, parameter) in macro.parameters.enumerated() {
            if i < positional.count {
                inner.variables[parameter.name] = positional[i]
            } else if let given = keyword.first(where: { $0.0 == parameter.name }) {
                inner.variables[parameter.name] = given.1
            } else if let value = parameter.defaultValue {
                inner.variables[parameter.name] = try eval(value, inner)
            } else {
                inner.variables[parameter.name] = .undefined("'\(parameter.name)' is undefined")
            }
        }
        for (name, _) in keyword where !macro.parameters.contains(where: { $0.name == name }) {
            throw Self.fail("macro '\(macro.name)' takes no keyword argument '\(name)'")
        }
        depth += 1
        defer { depth -= 1 }
        let callerLine = line
        var text = ""
        _ = try run(macro.body, in: inner, into: &text)
        line = callerLine
        return .string(text)
    }

    // MARK: Expressions

    mutating func evalArguments(_ arguments: JinjaArguments, _ scope: JinjaScope) throws -> (positional: [JinjaValue], keyword: [(String, JinjaValue)]) {
        var positional = try arguments.positional.map { try eval($0, scope) }
        if let splat = arguments.splat { positional += try Self.iterate(try eval(splat, scope)) }
        return (positional, try arguments.keyword.map { ($0.name, try eval($0.value, scope)) })
    }

    mutating func eval(_ expr: JinjaExpr, _ scope: JinjaScope) throws -> JinjaValue {
        switch expr {
        case .literal(let value): return value
        case .name(let name): return scope.lookup(name) ?? .undefined("'\(name)' is undefined")
        case .list(let items): return .list(try nesting(try items.map { try eval($0, scope) }))
        case .tuple(let items): return .list(try nesting(try items.map { try eval($0, scope) }))
        case .dict(let pairs):
            var entries: [(JinjaValue, JinjaValue)] = []
            for pair in pairs {
                let key = try eval(pair.key, scope)
                switch key {
                case .string, .int, .float, .bool, .none: break
                default: throw Self.fail("unhashable type: '\(Self.typeName(key))'")
                }
                entries.append((key, try eval(pair.value, scope)))
            }
            _ = try nesting(entries.map(\.1))
            return .dict(JinjaDict(keyed: entries))
        case let .attribute(object, name):
            return try Self.attribute(try eval(object, scope), name)
        case let .item(object, index):
            return try Self.item(try eval(object, scope), try eval(index, scope))
        case let .slice(object, start, stop, step):
            let value = try eval(object, scope)
            func int(_ e: JinjaExpr?) throws -> Int? {
                guard let e else { return nil }
                switch try eval(e, scope) {
                case .int(let i): return i
                case .none: return nil
                case let other: throw Self.fail("slice indices must be integers, found \(Self.typeName(other))")
                }
            }
            return try Self.slice(value, try int(start), try int(stop), try int(step))
        case let .call(callee, arguments):
            let function = try eval(callee, scope)
            let (positional, keyword) = try evalArguments(arguments, scope)
            if case .macro(let m) = function { return try callMacro(m.macro, scope: m.scope, positional, keyword) }
            guard case .function(let f) = function else {
                if case .undefined(let message) = function { throw Self.fail(message) }
                throw Self.fail("'\(Self.typeName(function))' object is not callable")
            }
            return try f.call(positional, keyword)
        case let .filter(value, name, arguments):
            let input = try eval(value, scope)
            let (positional, keyword) = try evalArguments(arguments, scope)
            return try filter(name, input, positional, keyword)
        case let .test(value, name, arguments, negated):
            let input = try eval(value, scope)
            let positional = try evalArguments(arguments, scope).positional
            return .bool(try Self.test(name, input, positional) != negated)
        case .negate(let inner):
            switch try eval(inner, scope) {
            case .int(let i):
                guard i != .min else { throw Self.fail("integer overflow in -(\(i))") }
                return .int(-i)
            case .float(let d): return .float(-d)
            case .bool(let b): return .int(b ? -1 : 0)
            case let other: throw Self.fail("bad operand type for unary -: '\(Self.typeName(other))'")
            }
        case .positive(let inner):
            switch try eval(inner, scope) {
            case .int(let i): return .int(i)
            case .float(let d): return .float(d)
            case .bool(let b): return .int(b ? 1 : 0)
            case .undefined(let message): throw Self.fail(message)
            case let other: throw Self.fail("bad operand type for unary +: '\(Self.typeName(other))'")
            }
        case .not(let inner): return .bool(!Self.truthy(try eval(inner, scope)))
        case let .and(left, right):
            let l = try eval(left, scope)
            return Self.truthy(l) ? try eval(right, scope) : l
        case let .or(left, right):
            let l = try eval(left, scope)
            return Self.truthy(l) ? l : try eval(right, scope)
        case let .conditional(condition, then, otherwise):
            if Self.truthy(try eval(condition, scope)) { return try eval(then, scope) }
            return try otherwise.map { try eval($0, scope) } ?? .undefined("the inline if-expression evaluated to false and no else section was defined")
        case .concat(let items):
            return .string(try items.map { Self.str(try eval($0, scope)) }.joined())
        case let .binary(op, left, right):
            return try Self.binary(op, try eval(left, scope), try eval(right, scope))
        case let .compare(first, rest):
            var left = try eval(first, scope)
            for (op, operand) in rest {
                let right = try eval(operand, scope)
                guard Self.truthy(try Self.binary(op, left, right)) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        }
    }
}

