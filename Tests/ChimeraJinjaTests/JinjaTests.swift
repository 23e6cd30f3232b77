import Foundation
import Testing
@testable import ChimeraJinja

/// One template rendered by transformers' chat-template environment (Scripts/make_jinja_fixtures.py).
struct JinjaCase {
    let name: String
    let template: String
    let context: [String: JinjaValue]
    let output: String?
    let error: String?
    let syntaxError: Bool

    static func all() throws -> [JinjaCase] {
        let url = try #require(Bundle.module.url(forResource: "cases", withExtension: "json", subdirectory: "Fixtures"))
        let list = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [[String: Any]])
        return try list.map { item in
            guard case .dict(let context) = try typed(item["context"] as Any) else { throw FixtureError(item["name"] as? String ?? "?") }
            return JinjaCase(name: item["name"] as! String, template: item["template"] as! String,
                             context: Dictionary(uniqueKeysWithValues: context.entries.map { entry -> (String, JinjaValue) in
                                 guard case .string(let name) = entry.key else { return ("", entry.value) }
                                 return (name, entry.value)
                             }),
                             output: item["output"] as? String, error: item["error"] as? String, syntaxError: item["syntax_error"] as? Bool ?? false)
        }
    }

    struct FixtureError: Error { let name: String; init(_ name: String) { self.name = name } }

    /// The script's tagged values: ["int", 1], ["dict", [[key, value], ...]], ...
    static func typed(_ any: Any) throws -> JinjaValue {
        guard let pair = any as? [Any], let tag = pair.first as? String else { throw FixtureError("bad typed value \(any)") }
        switch tag {
        case "none": return .none
        case "bool": return .bool(pair[1] as! Bool)
        case "int": return .int((pair[1] as! NSNumber).intValue)
        case "float": return .float((pair[1] as! NSNumber).doubleValue)
        case "str": return .string(pair[1] as! String)
        case "list": return .list(try (pair[1] as! [Any]).map(typed))
        case "dict":
            let entries: [(String, JinjaValue)] = try (pair[1] as! [[Any]]).map { entry in (entry[0] as! String, try typed(entry[1])) }
            return .dict(JinjaDict(entries))
        default: throw FixtureError("unknown tag \(tag)")
        }
    }
}

/// 2026-12-02 at noon, local time: the day the fixtures' strftime_now saw.
let fixtureNow: Date = {
    Calendar.current.date(from: DateComponents(year: 2026, month: 12, day: 2, hour: 12))!
}()

@Suite struct JinjaTemplateTests {
    @Test func rendersAsTransformers() throws {
        let cases = try JinjaCase.all()
        #expect(cases.count > 60)
        for c in cases {
            let problem = Self.check(c)
            #expect(problem == nil, "\(c.name): \(problem ?? "")")
        }
    }

    /// What differs from transformers' result, or nil.
    static func check(_ c: JinjaCase) -> String? {
        let result: Result<String, JinjaError>
        do throws(JinjaError) {
            result = .success(try JinjaTemplate(c.template).render(c.context, now: fixtureNow))
        } catch {
            result = .failure(error)
        }
        switch (result, c.output) {
        case let (.success(rendered), expected?):
            guard rendered != expected else { return nil }
            let same = zip(rendered.unicodeScalars, expected.unicodeScalars).prefix { $0 == $1 }.count
            func around(_ s: String) -> String { String(String.UnicodeScalarView(s.unicodeScalars.dropFirst(max(0, same - 20)).prefix(60))).debugDescription }
            return "differs at code point \(same): rendered …\(around(rendered))…, transformers …\(around(expected))…"
        case let (.success(rendered), nil):
            return "rendered \(rendered.debugDescription), transformers raised \(c.error ?? "")"
        case let (.failure(error), expected?):
            return "raised \(error.errorDescription ?? ""), transformers rendered \(expected.debugDescription)"
        case let (.failure(error), nil):
            let raised = c.error ?? ""
            if c.syntaxError { return nil }
            // raise_exception's message is the template's own; other errors say what went wrong, as Python does.
            if raised.hasPrefix("TemplateError: ") {
                return error == .raised(String(raised.dropFirst("TemplateError: ".count))) ? nil : "raised \(error), transformers \(raised)"
            }
            let message = raised[raised.index(after: raised.firstIndex(of: ":")!)...].trimmingCharacters(in: .whitespaces)
            return error.errorDescription?.hasSuffix(message) == true ? nil : "raised \(error.errorDescription ?? ""), transformers \(raised)"
        }
    }
}

@Suite struct JinjaBehaviourTests {
    /// Errors name the line of the template they stand on.
    @Test func errorsNameTheirLine() throws {
        #expect(throws: JinjaError.syntax(line: 3, message: "no filter named 'nope' (not one this Jinja subset has)")) {
            _ = try JinjaTemplate("a\n{{ 1 }}\n{{ x | nope }}")
        }
        let template = try JinjaTemplate("line one\n{% for m in messages %}\n{{ m.content.missing.deeper }}\n{% endfor %}")
        #expect(throws: JinjaError.render(line: 3, message: "'str object' has no attribute 'missing'")) {
            _ = try template.render(["messages": .list([.dict(JinjaDict([("content", .string("hi"))]))])])
        }
    }

    /// A template that loops without end in effect (ranges inside ranges) is stopped, not run for hours.
    @Test func runawayLoopsStop() throws {
        let template = try JinjaTemplate("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}")
        #expect(throws: JinjaError.render(line: 1, message: "the template ran more than 1000000 loop iterations")) { _ = try template.render([:]) }
        let recursive = try JinjaTemplate("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}")
        #expect(throws: JinjaError.render(line: 1, message: "macro f nested more than 200 deep")) { _ = try recursive.render([:]) }
    }
}

@Suite struct JinjaLimitTests {
    /// Arithmetic at Int's edges and templates that grow without bound fail with an error, never a
    /// trap or the machine's memory.
    @Test(arguments: [
        "{% set m = -9223372036854775807 - 1 %}{{ -m }}", "{{ (-9223372036854775807 - 1) | abs }}",
        "{{ (-9223372036854775807 - 1) // -1 }}", "{{ range(-9223372036854775807, 9223372036854775807) | length }}",
        "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s | length }}",
        "{% for i in range(1000) %}{{ 'x' * 1000000 }}{% endfor %}",
    ])
    func refusedNotTrapped(_ text: String) throws {
        #expect(throws: JinjaError.self) { _ = try JinjaTemplate(text).render([:]) }
    }

    @Test func edgesThatFit() throws {
        #expect(try JinjaTemplate("{{ (-9223372036854775807 - 1) is divisibleby(-1) }} {{ -7 is odd }} {{ 'a' | indent(10000000000) }}").render([:]) == "True True a")
        // (From the fuzz: an empty list or text repeated Int.max times allocated Int.max empty items.)
        #expect(try JinjaTemplate("{{ 9223372036854775807 * [] }}{{ '' * 9223372036854775807 }}{{ 1e-7 in 9223372036854775807 * [] }}").render([:]) == "[]False")
    }
}

@Suite struct JinjaFuzzFindingTests {
    /// Found by fuzzing: values nested without end, and searches that took the product of two
    /// lengths, are refused or run in linear time.
    @Test func deepNestingIsRefused() throws {
        let template = try JinjaTemplate("{% set ns = namespace(l=[]) %}{% for i in range(100000) %}{% set ns.l = [ns.l] %}{% endfor %}{{ ns.l }}")
        #expect(throws: JinjaError.render(line: 1, message: "values nested more than 500 deep")) { _ = try template.render([:]) }
        // A namespace holding itself through a list prints, as Python prints a recursive list, with "...".
        let cycle = try JinjaTemplate("{% set ns = namespace(l=[]) %}{% set ns.l = [ns] %}{{ ns.l | string | length > 0 }}")
        #expect(try cycle.render([:]) == "True")
    }

    @Test func searchesAreLinear() throws {
        let start = Date()
        let template = try JinjaTemplate("{{ ('a' * 1000000).count('a' * 500000) }} {{ ('a' * 1000000).find('a' * 500000 ~ 'b') }} {{ ('a' * 1000000 ~ 'b') in ('a' * 2000000) }} {{ 'aaa'.rsplit('aa', 1) }} {{ 'aaa'.split('aa', 1) }} {{ 'abcabc'.rfind('bc') }} {{ 'aaaa'.count('aa') }}")
        #expect(try template.render([:]) == "2 -1 False ['a', ''] ['', 'a'] 4 2")
        #expect(Date().timeIntervalSince(start) < 10)  // (a naive search takes minutes)
    }

    /// jinja2's unique: strings compared lowercased unless case_sensitive, equal numbers one, lists unhashable.
    @Test func uniqueIsJinja2s() throws {
        #expect(try JinjaTemplate("{{ ['a', 'A', 'b', 1, 1.0, true] | unique | list }} {{ ['a', 'A'] | unique(true) | list }} {{ [{'n': 'x'}, {'n': 'X'}] | unique(attribute='n') | list }}").render([:])
                == "['a', 'b', 1] ['a', 'A'] [{'n': 'x'}]")
        #expect(throws: JinjaError.self) { _ = try JinjaTemplate("{{ [[1], [1]] | unique | list }}").render([:]) }
        #expect(throws: JinjaError.render(line: 1, message: "bad operand type for unary +: 'str'")) { _ = try JinjaTemplate("{{ +'a' }}").render([:]) }
    }
}
