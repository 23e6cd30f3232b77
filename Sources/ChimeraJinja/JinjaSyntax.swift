import Foundation

// The Jinja subset Hugging Face chat templates are written in, read as transformers reads them:
// jinja2 with trim_blocks, lstrip_blocks, loop controls and the `{% generation %}` tag. This file
// turns a template's text into a tree; JinjaRuntime.swift renders it. What jinja2 has and this
// subset does not (includes, inheritance, recursive loops, `**kwargs`, filters no chat template
// uses) is refused when the template is read, by name and line, never rendered wrong. As in jinja2,
// an unknown filter or test is refused when read unless it stands in an if statement or an inline
// if (a "soft" frame): there it fails only if it is reached.

/// A template error, with the line of the template it stands on.
public enum JinjaError: LocalizedError, Equatable, Sendable {
    /// The template's text is not Jinja this subset reads.
    case syntax(line: Int, message: String)
    /// Rendering failed (an undefined name's attribute, a type error, ...).
    case render(line: Int, message: String)
    /// The template called `raise_exception(message)`: it refuses the conversation.
    case raised(String)

    public var errorDescription: String? {
        switch self {
        case let .syntax(line, message): return "line \(line): \(message)"
        case let .render(line, message): return "line \(line): \(message)"
        case let .raised(message): return message
        }
    }
}

/// A parsed template: render it with `render(_:)` (JinjaRuntime.swift). Two are equal when their
/// texts are.
public struct JinjaTemplate: Sendable, Equatable {
    public let source: String
    let body: [JinjaNode]

    public static func == (a: JinjaTemplate, b: JinjaTemplate) -> Bool { a.source == b.source }

    public init(_ source: String) throws(JinjaError) {
        self.source = source
        let pieces = try JinjaLexer(source).pieces()
        var parser = JinjaParser(pieces: pieces)
        body = try parser.parseBody(until: [])
    }
}

// MARK: - Tree

struct JinjaNode: Sendable {
    indirect enum Kind: Sendable {
        case text(String)
        case output(JinjaExpr)
        case branches([(condition: JinjaExpr, body: [JinjaNode])], otherwise: [JinjaNode])
        case loop(targets: [String], iterable: JinjaExpr, filter: JinjaExpr?, body: [JinjaNode], otherwise: [JinjaNode])
        case assign(target: JinjaAssignTarget, value: JinjaExpr)
        case assignBlock(name: String, body: [JinjaNode])
        case macro(JinjaMacro)
        case breakLoop, continueLoop
        /// `{% generation %}`: transformers marks the assistant's text with it; it renders its body.
        case generation([JinjaNode])
        /// `{% filter name(args) %}…{% endfilter %}`: the body's text through a filter.
        case filterBlock(name: String, arguments: JinjaArguments, body: [JinjaNode])
        /// `{% call(params) macro(args) %}…{% endcall %}`: the macro called with the body as `caller`.
        case callBlock(caller: JinjaMacro, callee: JinjaExpr, arguments: JinjaArguments)
    }
    let kind: Kind
    let line: Int
}

enum JinjaAssignTarget: Sendable {
    case names([String])
    case attribute(object: String, name: String)
}

struct JinjaMacro: Sendable {
    let name: String
    let parameters: [(name: String, defaultValue: JinjaExpr?)]
    let body: [JinjaNode]
}

indirect enum JinjaExpr: Sendable {
    case literal(JinjaValue)
    case name(String)
    case list([JinjaExpr])
    case tuple([JinjaExpr])
    case dict([(key: JinjaExpr, value: JinjaExpr)])
    case attribute(JinjaExpr, String)
    case item(JinjaExpr, JinjaExpr)
    case slice(JinjaExpr, start: JinjaExpr?, stop: JinjaExpr?, step: JinjaExpr?)
    case call(JinjaExpr, JinjaArguments)
    case filter(JinjaExpr, name: String, JinjaArguments)
    case test(JinjaExpr, name: String, JinjaArguments, negated: Bool)
    case negate(JinjaExpr)
    /// Unary plus: a number as it is (anything else a type error, as in Python).
    case positive(JinjaExpr)
    case not(JinjaExpr)
    case binary(String, JinjaExpr, JinjaExpr)
    /// A chain of two or more comparisons.
    case compare(JinjaExpr, [(op: String, operand: JinjaExpr)])
    case and(JinjaExpr, JinjaExpr)
    case or(JinjaExpr, JinjaExpr)
    case conditional(condition: JinjaExpr, then: JinjaExpr, otherwise: JinjaExpr?)
    case concat([JinjaExpr])
}

struct JinjaArguments: Sendable {
    var positional: [JinjaExpr] = []
    var keyword: [(name: String, value: JinjaExpr)] = []
    /// `f(a, *rest)`: a sequence whose items follow the positional arguments.
    var splat: JinjaExpr?
}

// MARK: - Lexer

/// One token inside a tag.
struct JinjaToken: Sendable, Equatable {
    enum Kind: Sendable, Equatable {
        case name(String), string(String), integer(Int), float(Double), symbol(String)
    }
    let kind: Kind
    let line: Int
}

/// The template cut into text, `{{ … }}` and `{% … %}` (comments dropped), whitespace control applied.
enum JinjaPiece: Sendable {
    case text(String)
    case output([JinjaToken], line: Int)
    case statement([JinjaToken], line: Int)
}

struct JinjaLexer {
    let source: [Unicode.Scalar]

    init(_ text: String) {
        // jinja2 splits the source at "\r\n", "\r" and "\n" and joins the lines with "\n"; one
        // trailing line break goes (keep_trailing_newline is off).
        var scalars: [Unicode.Scalar] = []
        let all = Array(text.unicodeScalars)
        var i = 0
        while i < all.count {
            let c = all[i]
            if c == "\r" {
                scalars.append("\n")
                if i + 1 < all.count, all[i + 1] == "\n" { i += 1 }
            } else {
                scalars.append(c)
            }
            i += 1
        }
        if scalars.last == "\n" { scalars.removeLast() }
        source = scalars
        lineStarts = [0] + scalars.indices.filter { scalars[$0] == "\n" }.map { $0 + 1 }
    }

    /// Where each line starts, for `line(at:)`.
    let lineStarts: [Int]

    /// Python's str.splitlines boundaries (besides "\r", handled with "\r\n"), for the method.
    static let lineBreaks: Set<UInt32> = [0x0A, 0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029]

    /// The 1-based line of the scalar at `index` (a binary search over the line starts).
    func line(at index: Int) -> Int {
        var low = 0, high = lineStarts.count
        while high - low > 1 {
            let mid = (low + high) / 2
            if lineStarts[mid] <= index { low = mid } else { high = mid }
        }
        return low + 1
    }

    func pieces() throws(JinjaError) -> [JinjaPiece] {
        var out: [JinjaPiece] = []
        var i = 0
        // What the previous tag asks of the text after it: "-" strips its leading whitespace,
        // trim_blocks drops one line break after a block or comment tag ("+%}" keeps it).
        var stripLeading = false, trimNewline = false
        // jinja2's line_starting: the text starts a line (the template's start, or the previous
        // tag's end took a line break).
        var lineStarting = true
        func emit(_ text: [Unicode.Scalar]) {
            if !text.isEmpty { out.append(.text(String(String.UnicodeScalarView(text)))) }
        }
        while true {
            // The next tag opener.
            var j = i
            while j + 1 < source.count, !(source[j] == "{" && ["{", "%", "#"].contains(source[j + 1])) { j += 1 }
            let atEnd = j + 1 >= source.count
            var text = Array(source[i..<(atEnd ? source.count : j)])
            if stripLeading {
                let kept = text.drop(while: Self.isWhitespace)
                if kept.startIndex > 0 { lineStarting = text[kept.startIndex - 1] == "\n" }
                text = Array(kept)
            } else if trimNewline, text.first == "\n" {
                text.removeFirst()
                lineStarting = true
            }
            if atEnd {
                emit(text)
                return out
            }
            let opener = source[j + 1]
            var k = j + 2
            let minus = k < source.count && source[k] == "-", plus = k < source.count && source[k] == "+"
            if minus || plus { k += 1 }
            if minus {
                while let last = text.last, Self.isWhitespace(last) { text.removeLast() }
            } else if opener != "{", !plus {
                // lstrip_blocks: a block or comment tag after nothing but whitespace on its line takes it.
                let lastBreak = text.lastIndex(of: "\n")
                let tail = text[(lastBreak.map { $0 + 1 } ?? 0)...]
                if lastBreak != nil || lineStarting, !tail.isEmpty, tail.allSatisfy(Self.isWhitespace) { text.removeLast(tail.count) }
            }
            emit(text)
            let tagLine = line(at: j)
            stripLeading = false; trimNewline = false; lineStarting = false
            if opener == "#" {
                // A comment: up to "#}".
                var e = k
                while e + 1 < source.count, !(source[e] == "#" && source[e + 1] == "}") { e += 1 }
                guard e + 1 < source.count else { throw .syntax(line: tagLine, message: "a comment opened here is not closed with #}") }
                if e > k, source[e - 1] == "-" { stripLeading = true } else if !(e > k && source[e - 1] == "+") { trimNewline = true }
                i = e + 2
                continue
            }
            let closer: Unicode.Scalar = opener == "{" ? "}" : "%"
            let (tokens, end, sign) = try tokens(from: k, closer: closer, line: tagLine)
            i = end
            if sign == "-" { stripLeading = true } else if opener == "%", sign != "+" { trimNewline = true }
            if opener == "{" {
                out.append(.output(tokens, line: tagLine))
                continue
            }
            // {% raw %}…{% endraw %}: the text between, untouched.
            if tokens.count == 1, tokens[0].kind == .name("raw") {
                var e = i
                var found: (start: Int, end: Int, sign: Unicode.Scalar?)?
                while e + 1 < source.count {
                    if source[e] == "{", source[e + 1] == "%" {
                        var s = e + 2
                        if s < source.count, source[s] == "-" || source[s] == "+" { s += 1 }
                        if let (t, after, sign) = try? self.tokens(from: s, closer: "%", line: line(at: e)), t.count == 1, t[0].kind == .name("endraw") {
                            found = (e, after, sign)
                            break
                        }
                    }
                    e += 1
                }
                guard let found else { throw .syntax(line: tagLine, message: "{% raw %} is not closed with {% endraw %}") }
                // jinja2: "-" strips around the raw text; the line break after {% raw %} stays (no
                // trim_blocks there), and lstrip_blocks takes the indentation before {% endraw %}.
                var raw = Array(source[i..<found.start])
                if stripLeading { raw = Array(raw.drop(while: Self.isWhitespace)) }
                let endSign = source[found.start + 2]
                if endSign == "-" {
                    while let last = raw.last, Self.isWhitespace(last) { raw.removeLast() }
                } else if endSign != "+", let lastBreak = raw.lastIndex(of: "\n") {
                    let tail = raw[(lastBreak + 1)...]
                    if !tail.isEmpty, tail.allSatisfy(Self.isWhitespace) { raw.removeLast(tail.count) }
                }
                emit(raw)
                i = found.end
                stripLeading = found.sign == "-"; trimNewline = found.sign == nil
                continue
            }
            out.append(.statement(tokens, line: tagLine))
        }
    }

    static func isWhitespace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

    /// The tokens of a tag from `start` up to its closer ("}}" or "%}") outside brackets; the index
    /// after the closer, and the sign before it ("-" strips the whitespace that follows, "+" keeps
    /// the line break trim_blocks would take).
    func tokens(from start: Int, closer: Unicode.Scalar, line startLine: Int) throws(JinjaError) -> ([JinjaToken], Int, Unicode.Scalar?) {
        var tokens: [JinjaToken] = []
        var i = start, depth = 0, line = startLine
        func at(_ offset: Int) -> Unicode.Scalar? { i + offset < source.count ? source[i + offset] : nil }
        while true {
            while let c = at(0), Self.isWhitespace(c) {
                if c == "\n" { line += 1 }
                i += 1
            }
            guard let c = at(0) else {
                throw .syntax(line: startLine, message: "a tag opened here is not closed with \(closer == "}" ? "}}" : "%}")")
            }
            if depth == 0 {
                if c == closer, at(1) == "}" { return (tokens, i + 2, nil) }
                // ("+" keeps the line break after a block tag; jinja2 has no "+}}".)
                if c == "-" || (c == "+" && closer == "%"), at(1) == closer, at(2) == "}" { return (tokens, i + 3, c) }
            }
            if c == "_" || c.properties.isXIDStart {
                // Python identifiers, as jinja2's names (not only ASCII).
                var name = ""
                while let d = at(0), d == "_" || d.properties.isXIDContinue {
                    name.unicodeScalars.append(d); i += 1
                }
                tokens.append(JinjaToken(kind: .name(name), line: line))
            } else if c.isASCII, c.properties.numericType != nil {
                var digits = ""
                var isFloat = false
                while let d = at(0), d.isASCII, d.properties.numericType != nil || d == "_" { if d != "_" { digits.unicodeScalars.append(d) }; i += 1 }
                if at(0) == ".", let d = at(1), d.isASCII, d.properties.numericType != nil {
                    isFloat = true; digits += "."; i += 1
                    while let d = at(0), d.isASCII, d.properties.numericType != nil || d == "_" { if d != "_" { digits.unicodeScalars.append(d) }; i += 1 }
                }
                if let e = at(0), e == "e" || e == "E" {
                    var look = 1
                    if let s = at(1), s == "+" || s == "-" { look = 2 }
                    if let d = at(look), d.isASCII, d.properties.numericType != nil {
                        isFloat = true
                        for _ in 0..<look { digits.unicodeScalars.append(at(0)!); i += 1 }
                        while let d = at(0), d.isASCII, d.properties.numericType != nil { digits.unicodeScalars.append(d); i += 1 }
                    }
                }
                if isFloat {
                    guard let value = Double(digits) else { throw .syntax(line: line, message: "the number \(digits) is not one") }
                    tokens.append(JinjaToken(kind: .float(value), line: line))
                } else {
                    guard let value = Int(digits) else { throw .syntax(line: line, message: "the integer \(digits) is too large") }
                    tokens.append(JinjaToken(kind: .integer(value), line: line))
                }
            } else if c == "'" || c == "\"" {
                let (text, end) = try stringLiteral(from: i, line: line)
                line += source[i..<end].reduce(0) { $0 + ($1 == "\n" ? 1 : 0) }
                i = end
                tokens.append(JinjaToken(kind: .string(text), line: line))
            } else {
                let two = at(1).map { String(c) + String($0) }
                if let two, ["//", "**", "==", "!=", "<=", ">="].contains(two) {
                    tokens.append(JinjaToken(kind: .symbol(two), line: line)); i += 2
                } else if "+-*/%~[](){}<>=.:|,;".unicodeScalars.contains(c) {
                    if c == "(" || c == "[" || c == "{" { depth += 1 }
                    if c == ")" || c == "]" || c == "}" { depth = max(0, depth - 1) }
                    tokens.append(JinjaToken(kind: .symbol(String(c)), line: line)); i += 1
                } else {
                    throw .syntax(line: line, message: "unexpected character '\(c)' in a tag")
                }
            }
        }
    }

    /// A quoted string with Python's escapes (jinja2 decodes them as "unicode-escape").
    func stringLiteral(from start: Int, line: Int) throws(JinjaError) -> (String, Int) {
        let quote = source[start]
        var i = start + 1
        var out = String.UnicodeScalarView()
        func hex(_ count: Int) throws(JinjaError) -> Unicode.Scalar {
            guard i + count < source.count else { throw .syntax(line: line, message: "a string ends inside an escape") }
            let digits = String(String.UnicodeScalarView(source[(i + 1)...(i + count)]))
            guard let value = UInt32(digits, radix: 16), let scalar = Unicode.Scalar(value) else {
                throw .syntax(line: line, message: "bad escape \\\(source[i])\(digits) in a string")
            }
            i += count
            return scalar
        }
        while i < source.count {
            let c = source[i]
            if c == quote { return (String(out), i + 1) }
            if c == "\\", i + 1 < source.count {
                i += 1
                let e = source[i]
                switch e {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                case "b": out.append("\u{08}")
                case "f": out.append("\u{0C}")
                case "v": out.append("\u{0B}")
                case "a": out.append("\u{07}")
                case "\\", "'", "\"": out.append(e)
                case "\n": break  // a line continuation
                case "x": out.append(try hex(2))
                case "u": out.append(try hex(4))
                case "U": out.append(try hex(8))
                case "0"..."7":
                    var value = e.value - 48, n = 1
                    while n < 3, i + 1 < source.count, ("0"..."7").contains(source[i + 1]) { i += 1; value = value * 8 + source[i].value - 48; n += 1 }
                    out.append(Unicode.Scalar(value)!)
                default: out.append("\\"); out.append(e)
                }
                i += 1
                continue
            }
            out.append(c)
            i += 1
        }
        throw .syntax(line: line, message: "a string opened here is not closed")
    }
}

// MARK: - Parser

struct JinjaParser {
    let pieces: [JinjaPiece]
    var index = 0
    /// Inside an if statement (not in a loop, macro or block nested in it): jinja2's soft frame.
    var soft = false
    /// Blocks open around the statement being read (bounded, as expressions are: rendering recurses).
    var blockDepth = 0
    /// Loops open around it, in this macro (break and continue need one).
    var loopDepth = 0
    static let maxBlockDepth = 100

    init(pieces: [JinjaPiece]) { self.pieces = pieces }

    /// The filters and tests the runtime has (a template naming another is refused when read, as jinja2 does).
    static let filters: Set<String> = [
        "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "indent", "int", "items", "join",
        "last", "length", "list", "lower", "map", "max", "min", "reject", "rejectattr", "replace", "reverse", "round", "safe",
        "select", "selectattr", "sort", "string", "sum", "title", "tojson", "trim", "unique", "upper", "wordcount",
    ]
    static let tests: Set<String> = [
        "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false", "filter", "float", "ge", "gt",
        "greaterthan", "in", "integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number", "odd",
        "sameas", "sequence", "string", "test", "true", "undefined", "upper", "==", "!=", "<", "<=", ">", ">=",
    ]

    /// Nodes up to a statement whose first word is in `enders` (left for the caller), or the end.
    mutating func parseBody(until enders: Set<String>) throws(JinjaError) -> [JinjaNode] {
        var nodes: [JinjaNode] = []
        while index < pieces.count {
            switch pieces[index] {
            case .text(let text):
                nodes.append(JinjaNode(kind: .text(text), line: 0))
                index += 1
            case let .output(tokens, line):
                var stream = JinjaTokenStream(tokens: tokens, line: line, soft: soft)
                let expr = try stream.parseExpression(allowTuple: true)
                try stream.expectEnd(in: "{{ … }}")
                nodes.append(JinjaNode(kind: .output(expr), line: line))
                index += 1
            case let .statement(tokens, line):
                guard case .name(let word)? = tokens.first?.kind else {
                    throw .syntax(line: line, message: "a tag {% … %} must start with a statement name")
                }
                if enders.contains(word) { return nodes }
                index += 1
                blockDepth += 1
                defer { blockDepth -= 1 }
                guard blockDepth <= Self.maxBlockDepth else { throw .syntax(line: line, message: "blocks nested more than \(Self.maxBlockDepth) deep") }
                nodes.append(try parseStatement(word, JinjaTokenStream(tokens: Array(tokens.dropFirst()), line: line, soft: soft), line: line))
            }
        }
        if !enders.isEmpty {
            let expected = enders.sorted().map { "{% \($0) %}" }.joined(separator: " or ")
            throw .syntax(line: lastLine, message: "the template ends where \(expected) was expected")
        }
        return nodes
    }

    var lastLine: Int {
        for piece in pieces.reversed() {
            switch piece {
            case .output(_, let line), .statement(_, let line): return line
            case .text: continue
            }
        }
        return 1
    }

    /// The statement at `index - 1` is done; the next must be `word` (an end tag).
    mutating func expectEnd(_ words: Set<String>) throws(JinjaError) -> (word: String, stream: JinjaTokenStream) {
        guard index < pieces.count, case let .statement(tokens, line) = pieces[index], case .name(let word)? = tokens.first?.kind,
              words.contains(word) else {
            throw .syntax(line: lastLine, message: "expected \(words.sorted().map { "{% \($0) %}" }.joined(separator: " or "))")
        }
        index += 1
        return (word, JinjaTokenStream(tokens: Array(tokens.dropFirst()), line: line, soft: soft))
    }

    /// A body parsed with `soft` set as given (an if's bodies soft, a loop's, macro's or block's not).
    mutating func parseBody(until enders: Set<String>, soft bodySoft: Bool) throws(JinjaError) -> [JinjaNode] {
        let outer = soft
        soft = bodySoft
        defer { soft = outer }
        return try parseBody(until: enders)
    }

    mutating func parseStatement(_ word: String, _ stream: JinjaTokenStream, line: Int) throws(JinjaError) -> JinjaNode {
        var stream = stream
        switch word {
        case "if":
            let outer = soft
            soft = true
            stream.soft = true
            defer { soft = outer }
            var branches: [(condition: JinjaExpr, body: [JinjaNode])] = []
            var condition = try stream.parseExpression(allowTuple: false)
            try stream.expectEnd(in: "{% if %}")
            var otherwise: [JinjaNode] = []
            while true {
                let body = try parseBody(until: ["elif", "else", "endif"])
                branches.append((condition, body))
                var (ender, next) = try expectEnd(["elif", "else", "endif"])
                if ender == "elif" {
                    condition = try next.parseExpression(allowTuple: false)
                    try next.expectEnd(in: "{% elif %}")
                    continue
                }
                try next.expectEnd(in: "{% \(ender) %}")
                if ender == "else" {
                    otherwise = try parseBody(until: ["endif"])
                    let (_, end) = try expectEnd(["endif"])
                    try end.expectEnd(in: "{% endif %}")
                }
                break
            }
            return JinjaNode(kind: .branches(branches, otherwise: otherwise), line: line)
        case "for":
            var targets: [String] = []
            repeat {
                targets.append(try stream.expectName(what: "a loop variable"))
            } while stream.skip(symbol: ",")
            try stream.expectWord("in")
            let iterable = try stream.parseExpression(allowTuple: false, noConditional: true)
            var filter: JinjaExpr?
            if stream.skip(word: "if") { filter = try stream.parseExpression(allowTuple: false) }
            if stream.peekWord == "recursive" { throw .syntax(line: line, message: "recursive loops are not supported") }
            try stream.expectEnd(in: "{% for %}")
            loopDepth += 1
            let body = try parseBody(until: ["else", "endfor"], soft: false)
            loopDepth -= 1
            let (ender, next) = try expectEnd(["else", "endfor"])
            try next.expectEnd(in: "{% \(ender) %}")
            var otherwise: [JinjaNode] = []
            if ender == "else" {
                otherwise = try parseBody(until: ["endfor"], soft: false)
                let (_, end) = try expectEnd(["endfor"])
                try end.expectEnd(in: "{% endfor %}")
            }
            return JinjaNode(kind: .loop(targets: targets, iterable: iterable, filter: filter, body: body, otherwise: otherwise), line: line)
        case "set":
            let first = try stream.expectName(what: "a name to set")
            var target = JinjaAssignTarget.names([first])
            if stream.skip(symbol: ".") {
                target = .attribute(object: first, name: try stream.expectName(what: "an attribute name"))
            } else if stream.peekSymbol == "," {
                var names = [first]
                while stream.skip(symbol: ",") { names.append(try stream.expectName(what: "a name to set")) }
                target = .names(names)
            }
            if stream.atEnd, case .names(let names) = target, names.count == 1 {
                try stream.expectEnd(in: "{% set %}")
                let body = try parseBody(until: ["endset"], soft: false)
                let (_, end) = try expectEnd(["endset"])
                try end.expectEnd(in: "{% endset %}")
                return JinjaNode(kind: .assignBlock(name: first, body: body), line: line)
            }
            try stream.expect(symbol: "=")
            let value = try stream.parseExpression(allowTuple: true)
            try stream.expectEnd(in: "{% set %}")
            return JinjaNode(kind: .assign(target: target, value: value), line: line)
        case "macro":
            let name = try stream.expectName(what: "the macro's name")
            let parameters = try stream.parseParameters()
            try stream.expectEnd(in: "{% macro %}")
            let outerLoops = loopDepth
            loopDepth = 0  // (a macro's body breaks no loop of its caller's)
            let body = try parseBody(until: ["endmacro"], soft: false)
            loopDepth = outerLoops
            let (_, end) = try expectEnd(["endmacro"])
            try end.expectEnd(in: "{% endmacro %}")
            return JinjaNode(kind: .macro(JinjaMacro(name: name, parameters: parameters, body: body)), line: line)
        case "break", "continue":
            try stream.expectEnd(in: "{% \(word) %}")
            guard loopDepth > 0 else { throw .syntax(line: line, message: "{% \(word) %} outside a loop") }
            return JinjaNode(kind: word == "break" ? .breakLoop : .continueLoop, line: line)
        case "filter":
            let name = try stream.expectName(what: "a filter name")
            if !Self.filters.contains(name) { stream.unknown.append("filter named '\(name)'") }
            let arguments = stream.peekSymbol == "(" ? try stream.parseArguments() : JinjaArguments()
            try stream.expectEnd(in: "{% filter %}")
            let body = try parseBody(until: ["endfilter"], soft: false)
            let (_, end) = try expectEnd(["endfilter"])
            try end.expectEnd(in: "{% endfilter %}")
            return JinjaNode(kind: .filterBlock(name: name, arguments: arguments, body: body), line: line)
        case "call":
            // {% call(params) macro(args) %}: the parameters the body takes from the macro's caller(...).
            let parameters = stream.peekSymbol == "(" ? try stream.parseParameters() : []
            guard case let .call(callee, arguments) = try stream.parseExpression(allowTuple: false) else {
                throw stream.error("{% call %} takes a macro call, e.g. {% call list(items) %}")
            }
            try stream.expectEnd(in: "{% call %}")
            let outerLoops = loopDepth
            loopDepth = 0  // (the body is the caller's: it breaks no loop around the call)
            let body = try parseBody(until: ["endcall"], soft: false)
            loopDepth = outerLoops
            let (_, end) = try expectEnd(["endcall"])
            try end.expectEnd(in: "{% endcall %}")
            return JinjaNode(kind: .callBlock(caller: JinjaMacro(name: "caller", parameters: parameters, body: body), callee: callee, arguments: arguments),
                             line: line)
        case "generation":
            try stream.expectEnd(in: "{% generation %}")
            let body = try parseBody(until: ["endgeneration"])
            let (_, end) = try expectEnd(["endgeneration"])
            try end.expectEnd(in: "{% endgeneration %}")
            return JinjaNode(kind: .generation(body), line: line)
        case "elif", "else", "endif", "endfor", "endset", "endmacro", "endgeneration", "endraw", "endfilter", "endcall":
            throw .syntax(line: line, message: "{% \(word) %} without the statement it ends")
        default:
            throw .syntax(line: line, message: "the statement {% \(word) %} is not supported (chat templates use if, for, set, macro, call, filter, break, continue, generation)")
        }
    }
}

/// The tokens of one tag, read as an expression (jinja2's precedence).
struct JinjaTokenStream {
    let tokens: [JinjaToken]
    let line: Int
    var position = 0
    /// In a soft frame (an if statement's): unknown filters and tests fail only if reached.
    var soft = false
    /// Unknown filters and tests read so far outside inline ifs ("filter 'x'").
    var unknown: [String] = []
    /// How deep the parse recurses (parentheses, `not`, unary signs) and how many links chains
    /// add (a + b + ..., a.b.c, x|f|g): both bound the tree, which rendering walks recursively —
    /// a tag of ten thousand nested parentheses would otherwise overflow the stack (jinja2 raises
    /// RecursionError).
    var depth = 0, links = 0
    static let maxDepth = 200, maxLinks = 500

    mutating func descend() throws(JinjaError) {
        depth += 1
        guard depth <= Self.maxDepth else { throw error("the expression is nested more than \(Self.maxDepth) deep") }
    }

    mutating func link() throws(JinjaError) {
        links += 1
        guard links <= Self.maxLinks else { throw error("the expression chains more than \(Self.maxLinks) operations") }
    }

    init(tokens: [JinjaToken], line: Int, soft: Bool = false) {
        self.tokens = tokens; self.line = line; self.soft = soft
    }

    var atEnd: Bool { position >= tokens.count }
    var current: JinjaToken.Kind? { atEnd ? nil : tokens[position].kind }
    var peekSymbol: String? { if case .symbol(let s)? = current { return s }; return nil }
    var peekWord: String? { if case .name(let s)? = current { return s }; return nil }
    var currentLine: Int { atEnd ? (tokens.last?.line ?? line) : tokens[position].line }

    func describe(_ kind: JinjaToken.Kind?) -> String {
        switch kind {
        case nil: return "the end of the tag"
        case .name(let s)?: return "'\(s)'"
        case .string(let s)?: return "the string \"\(s)\""
        case .integer(let v)?: return "\(v)"
        case .float(let v)?: return "\(v)"
        case .symbol(let s)?: return "'\(s)'"
        }
    }

    func error(_ message: String) -> JinjaError { .syntax(line: currentLine, message: message) }

    mutating func skip(symbol: String) -> Bool {
        guard peekSymbol == symbol else { return false }
        position += 1
        return true
    }
    mutating func skip(word: String) -> Bool {
        guard peekWord == word else { return false }
        position += 1
        return true
    }
    mutating func expect(symbol: String) throws(JinjaError) {
        guard skip(symbol: symbol) else { throw error("expected '\(symbol)', found \(describe(current))") }
    }
    mutating func expectWord(_ word: String) throws(JinjaError) {
        guard skip(word: word) else { throw error("expected '\(word)', found \(describe(current))") }
    }
    mutating func expectName(what: String) throws(JinjaError) -> String {
        guard let word = peekWord else { throw error("expected \(what), found \(describe(current))") }
        position += 1
        return word
    }
    /// The tag ends here; an unknown filter or test read outside a soft frame is refused now, as
    /// jinja2 refuses it when compiling.
    func expectEnd(in tag: String) throws(JinjaError) {
        guard atEnd else { throw error("unexpected \(describe(current)) in \(tag)") }
        if !soft, let name = unknown.first { throw error("no \(name) (not one this Jinja subset has)") }
    }

    /// A macro's or call block's parameters: `(a, b=default, ...)`.
    mutating func parseParameters() throws(JinjaError) -> [(name: String, defaultValue: JinjaExpr?)] {
        try expect(symbol: "(")
        var parameters: [(name: String, defaultValue: JinjaExpr?)] = []
        while !skip(symbol: ")") {
            if !parameters.isEmpty { try expect(symbol: ",") }
            if skip(symbol: ")") { break }
            let parameter = try expectName(what: "a parameter name")
            let value = skip(symbol: "=") ? try parseExpression(allowTuple: false) : nil
            parameters.append((parameter, value))
        }
        return parameters
    }

    mutating func parseExpression(allowTuple: Bool, noConditional: Bool = false) throws(JinjaError) -> JinjaExpr {
        var first = noConditional ? try parseOr() : try parseConditional()
        guard allowTuple, peekSymbol == "," else { return first }
        var items = [first]
        while skip(symbol: ",") {
            if atEnd || peekSymbol == ")" { break }
            items.append(try parseConditional())
        }
        first = .tuple(items)
        return first
    }

    mutating func parseConditional() throws(JinjaError) -> JinjaExpr {
        try descend()
        defer { depth -= 1 }
        let mark = unknown.count
        var expr = try parseOr()
        while skip(word: "if") {
            let condition = try parseOr()
            let otherwise = skip(word: "else") ? try parseConditional() : nil
            expr = .conditional(condition: condition, then: expr, otherwise: otherwise)
            // An inline if is a soft frame: what it holds fails only if reached.
            unknown.removeSubrange(mark...)
        }
        return expr
    }

    mutating func parseOr() throws(JinjaError) -> JinjaExpr {
        var left = try parseAnd()
        while skip(word: "or") { try link(); left = .or(left, try parseAnd()) }
        return left
    }

    mutating func parseAnd() throws(JinjaError) -> JinjaExpr {
        var left = try parseNot()
        while skip(word: "and") { try link(); left = .and(left, try parseNot()) }
        return left
    }

    mutating func parseNot() throws(JinjaError) -> JinjaExpr {
        if skip(word: "not") {
            try descend()
            defer { depth -= 1 }
            return .not(try parseNot())
        }
        return try parseCompare()
    }

    /// Comparisons chain as in Python: `a < b < c` is `a < b and b < c`, b evaluated once.
    mutating func parseCompare() throws(JinjaError) -> JinjaExpr {
        let first = try parseMath1()
        var rest: [(op: String, operand: JinjaExpr)] = []
        while true {
            if let op = peekSymbol, ["==", "!=", "<", "<=", ">", ">="].contains(op) {
                position += 1
                rest.append((op, try parseMath1()))
            } else if skip(word: "in") {
                rest.append(("in", try parseMath1()))
            } else if peekWord == "not", position + 1 < tokens.count, tokens[position + 1].kind == .name("in") {
                position += 2
                rest.append(("not in", try parseMath1()))
            } else {
                break
            }
        }
        if rest.isEmpty { return first }
        if rest.count == 1 { return .binary(rest[0].op, first, rest[0].operand) }
        return .compare(first, rest)
    }

    mutating func parseMath1() throws(JinjaError) -> JinjaExpr {
        var left = try parseConcat()
        while let op = peekSymbol, op == "+" || op == "-" {
            try link()
            position += 1
            left = .binary(op, left, try parseConcat())
        }
        return left
    }

    mutating func parseConcat() throws(JinjaError) -> JinjaExpr {
        var items = [try parseMath2()]
        while skip(symbol: "~") { try link(); items.append(try parseMath2()) }
        return items.count == 1 ? items[0] : .concat(items)
    }

    mutating func parseMath2() throws(JinjaError) -> JinjaExpr {
        var left = try parsePower()
        while let op = peekSymbol, ["*", "/", "//", "%"].contains(op) {
            try link()
            position += 1
            left = .binary(op, left, try parsePower())
        }
        return left
    }

    mutating func parsePower() throws(JinjaError) -> JinjaExpr {
        var left = try parseUnary(withFilters: true)
        while skip(symbol: "**") { try link(); left = .binary("**", left, try parseUnary(withFilters: true)) }
        return left
    }

    mutating func parseUnary(withFilters: Bool) throws(JinjaError) -> JinjaExpr {
        try descend()
        defer { depth -= 1 }
        var node: JinjaExpr
        if skip(symbol: "-") {
            node = .negate(try parseUnary(withFilters: false))
        } else if skip(symbol: "+") {
            node = .positive(try parseUnary(withFilters: false))
        } else {
            node = try parsePostfix(try parsePrimary())
        }
        if withFilters { node = try parseFiltersAndTests(node) }
        return node
    }

    mutating func parsePrimary() throws(JinjaError) -> JinjaExpr {
        guard let token = current else { throw error("expected an expression, found the end of the tag") }
        position += 1
        switch token {
        case .name(let name):
            switch name {
            case "true", "True": return .literal(.bool(true))
            case "false", "False": return .literal(.bool(false))
            case "none", "None": return .literal(.none)
            default: return .name(name)
            }
        case .string(var text):
            // Adjacent strings join, as in Python.
            while case .string(let more)? = current { text += more; position += 1 }
            return .literal(.string(text))
        case .integer(let value): return .literal(.int(value))
        case .float(let value): return .literal(.float(value))
        case .symbol("("):
            if skip(symbol: ")") { return .tuple([]) }
            let inner = try parseExpression(allowTuple: true)
            try expect(symbol: ")")
            return inner
        case .symbol("["):
            var items: [JinjaExpr] = []
            while !skip(symbol: "]") {
                if !items.isEmpty { try expect(symbol: ","); if skip(symbol: "]") { break } }
                items.append(try parseConditional())
            }
            return .list(items)
        case .symbol("{"):
            var pairs: [(key: JinjaExpr, value: JinjaExpr)] = []
            while !skip(symbol: "}") {
                if !pairs.isEmpty { try expect(symbol: ","); if skip(symbol: "}") { break } }
                let key = try parseConditional()
                try expect(symbol: ":")
                pairs.append((key, try parseConditional()))
            }
            return .dict(pairs)
        default:
            position -= 1
            throw error("expected an expression, found \(describe(token))")
        }
    }

    mutating func parsePostfix(_ start: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var node = start
        while true {
            if skip(symbol: ".") {
                try link()
                if case .integer(let i)? = current {
                    position += 1
                    node = .item(node, .literal(.int(i)))
                } else {
                    node = .attribute(node, try expectName(what: "an attribute name after '.'"))
                }
            } else if skip(symbol: "[") {
                try link()
                node = try parseSubscript(node)
            } else if peekSymbol == "(" {
                try link()
                node = .call(node, try parseArguments())
            } else {
                return node
            }
        }
    }

    mutating func parseSubscript(_ object: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var parts: [JinjaExpr?] = [nil]
        var sawColon = false
        while !skip(symbol: "]") {
            if skip(symbol: ":") {
                sawColon = true
                parts.append(nil)
                guard parts.count <= 3 else { throw error("a slice takes at most start:stop:step") }
                continue
            }
            guard parts[parts.count - 1] == nil else { throw error("expected ']' or ':', found \(describe(current))") }
            parts[parts.count - 1] = try parseExpression(allowTuple: false)
        }
        if !sawColon {
            guard let index = parts[0] else { throw error("empty subscript []") }
            return .item(object, index)
        }
        while parts.count < 3 { parts.append(nil) }
        return .slice(object, start: parts[0], stop: parts[1], step: parts[2])
    }

    mutating func parseArguments() throws(JinjaError) -> JinjaArguments {
        try expect(symbol: "(")
        var arguments = JinjaArguments()
        while !skip(symbol: ")") {
            if !arguments.positional.isEmpty || !arguments.keyword.isEmpty || arguments.splat != nil {
                try expect(symbol: ",")
                if skip(symbol: ")") { break }
            }
            if skip(symbol: "*") {
                guard arguments.splat == nil else { throw error("a call takes one *sequence") }
                arguments.splat = try parseConditional()
            } else if peekSymbol == "**" {
                throw error("**mappings in a call are not supported")
            } else if case .name(let name)? = current, position + 1 < tokens.count, tokens[position + 1].kind == .symbol("=") {
                position += 2
                arguments.keyword.append((name, try parseConditional()))
            } else {
                guard arguments.keyword.isEmpty, arguments.splat == nil else { throw error("a positional argument after keyword or *arguments") }
                arguments.positional.append(try parseConditional())
            }
        }
        return arguments
    }

    mutating func parseFiltersAndTests(_ start: JinjaExpr) throws(JinjaError) -> JinjaExpr {
        var node = start
        while true {
            if skip(symbol: "|") {
                try link()
                let name = try expectName(what: "a filter name after '|'")
                if !JinjaParser.filters.contains(name) { unknown.append("filter named '\(name)'") }
                let arguments = peekSymbol == "(" ? try parseArguments() : JinjaArguments()
                node = .filter(node, name: name, arguments)
            } else if skip(word: "is") {
                try link()
                let negated = skip(word: "not")
                var name: String
                if let symbol = peekSymbol, ["==", "!=", "<", "<=", ">", ">="].contains(symbol) {
                    position += 1; name = symbol
                } else {
                    name = try expectName(what: "a test name after 'is'")
                }
                if name == "none" || name == "None" { name = "none" }
                if name == "true" || name == "True" { name = "true" }
                if name == "false" || name == "False" { name = "false" }
                if !JinjaParser.tests.contains(name) { unknown.append("test named '\(name)'") }
                var arguments = JinjaArguments()
                if peekSymbol == "(" {
                    arguments = try parseArguments()
                } else if startsArgument {
                    // `x is divisibleby 3`, `x is sameas none`: one argument without parentheses.
                    arguments.positional = [try parsePostfix(try parsePrimary())]
                }
                node = .test(node, name: name, arguments, negated: negated)
            } else if peekSymbol == "(" {
                try link()
                node = .call(node, try parseArguments())
            } else {
                return node
            }
        }
    }

    /// Whether the next token can start a test's bare argument (jinja2's rule: not an operator
    /// word, not a symbol but '[' or '{' or '(').
    var startsArgument: Bool {
        switch current {
        case .name(let word)?: return !["else", "or", "and", "is", "if", "in", "not"].contains(word)
        case .string?, .integer?, .float?: return true
        case .symbol(let s)?: return s == "[" || s == "{"
        case nil: return false
        }
    }
}
