import ArgumentParser
import Chimera
import ChimeraComponents
import ChimeraIO
import Foundation

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List components (and assemblies) by kind, modality and family.")
    @OptionGroup var catalogOptions: CatalogOptions
    @Option(help: "encoder, connector, language_model, assembly or template") var kind: String?
    @Option(help: "image, audio, sensor, ...") var modality: String?
    @Option(help: "A family name, e.g. clip-vision, mlp, llama") var family: String?
    @Flag(help: "Print JSON") var json = false

    /// `origin`: the manifest's file (or built-in); `family_origin`: built-in or the plugin library.
    struct Row: Encodable {
        let id: String; let kind: String; let family: String; let modality: String?; let origin: String
        var family_origin: String? = nil; let summary: String
        /// Weight and tokenizer paths not on disk (components only).
        var missing: [String] = []
    }

    func run() throws {
        do {
            let catalog = try catalogOptions.catalog()
            let families = catalogOptions.families()
            var rows: [Row] = []
            if kind == "template" {
                rows += catalog.templates.values.sorted { $0.id < $1.id }.map {
                    Row(id: $0.id, kind: "template", family: "-", modality: nil, origin: $0.origin,
                        summary: $0.description ?? $0.jinjaFile.map { "Jinja chat template \($0)" } ?? "stops at \($0.stop.joined(separator: ", "))")
                }
            } else if kind != "assembly" {
                let componentKind: ComponentKind? = try kind.map {
                    guard let k = ComponentKind(rawValue: $0) else {
                        throw ValidationError("--kind must be encoder, connector, language_model, assembly or template, found '\($0)'")
                    }
                    return k
                }
                rows += catalog.list(kind: componentKind, modality: modality, family: family).map {
                    Row(id: $0.id, kind: $0.kind.rawValue, family: $0.family, modality: $0.modality, origin: $0.origin,
                        family_origin: families.families[$0.family]?.origin ?? "unknown family", summary: summarize($0), missing: $0.missingFiles)
                }
            }
            if kind == nil || kind == "assembly", modality == nil, family == nil {
                rows += catalog.assemblies.values.sorted { $0.id < $1.id }.map {
                    Row(id: $0.id, kind: "assembly", family: "-", modality: nil, origin: $0.origin, family_origin: nil,
                        summary: ([$0.languageModel] + $0.inputs.map { "\($0.placeholder) \($0.encoder) → \($0.connector)" }).joined(separator: "; "))
                }
            }
            // An empty listing for a filter is a result, but a mistyped one should not look like one.
            if rows.isEmpty, modality != nil || family != nil {
                let all = catalog.list(kind: nil, modality: nil, family: nil)
                let known = [modality.map { _ in "modalities: " + Set(all.compactMap(\.modality)).sorted().joined(separator: ", ") },
                             family.map { _ in "families: " + Set(all.map(\.family)).sorted().joined(separator: ", ") }]
                progress("no component matches (\(known.compactMap { $0 }.joined(separator: "; ")))")
            }
            if json { try printJSON(rows); return }
            let idWidth = max(2, rows.map(\.id.count).max() ?? 0), kindWidth = 14
            print("ID".padding(toLength: idWidth, withPad: " ", startingAt: 0) + "  " + "KIND".padding(toLength: kindWidth, withPad: " ", startingAt: 0) + "  SUMMARY  [ORIGIN]")
            for row in rows {
                let origin = [row.family_origin.map { "family: \($0)" }, "manifest: \(row.origin)"].compactMap { $0 }.joined(separator: "; ")
                print(row.id.padding(toLength: idWidth, withPad: " ", startingAt: 0) + "  "
                      + row.kind.padding(toLength: kindWidth, withPad: " ", startingAt: 0) + "  " + row.summary
                      + (row.missing.isEmpty ? "" : "  [weights missing]") + "  [\(origin)]")
            }
            let folders = Set(rows.flatMap(\.missing).map(weightsFolder)).sorted()
            if !folders.isEmpty { progress("\n" + weightsHelp(missingFolders: folders)) }
        } catch let error as ValidationError { throw error } catch { throw fail(error) }
    }

    /// The folder a missing file belongs in (the unit a user downloads).
    func weightsFolder(_ path: String) -> String {
        path.hasSuffix("/") ? path : URL(fileURLWithPath: path).deletingLastPathComponent().path + "/"
    }

    func summarize(_ m: ComponentManifest) -> String {
        switch m.kind {
        case .encoder:
            return "\(m.family), \(m.modality ?? "?"), \(m.output.map { "\($0.tokens) tokens × \($0.width)" } ?? "")"
        case .connector:
            return "\(m.family), \(m.inputWidth?.description ?? "?") → \(m.outputWidth?.description ?? "?")\(m.weights == nil ? ", fresh (seeded)" : "")"
        case .languageModel:
            return "\(m.family), width \(CompatibilityChecker.languageModelWidth(m).map(String.init) ?? "?"), context \(m.contextLength ?? 0)"
        }
    }
}

struct Show: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a component, assembly or chat template manifest.")
    @OptionGroup var catalogOptions: CatalogOptions
    @Argument(help: "A component, assembly or template id") var id: String

    func run() throws {
        do {
            let catalog = try catalogOptions.catalog()
            if let component = catalog.components[id] {
                try printJSON(component)
                FileHandle.standardError.write(Data("(from \(component.origin))\n".utf8))
            } else if let assembly = catalog.assemblies[id] {
                try printJSON(assembly)
                FileHandle.standardError.write(Data("(from \(assembly.origin))\n".utf8))
            } else if let template = catalog.templates[id] {
                try printJSON(template)
                FileHandle.standardError.write(Data("(from \(template.origin))\n".utf8))
            } else {
                throw ManifestError.unknownID(id: id, kind: "component, assembly or template",
                                              known: (Array(catalog.components.keys) + Array(catalog.assemblies.keys)).sorted())
            }
        } catch { throw fail(error) }
    }
}

struct Compat: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Which components plug into a component, and why the others don't.")
    @OptionGroup var catalogOptions: CatalogOptions
    @Argument(help: "A component or assembly id") var id: String?
    @Flag(help: "The whole encoder × connector × language model table, with the reason in each cell that does not fit") var matrix = false
    @Flag(help: "Print JSON") var json = false

    struct Verdict: Encodable {
        let id: String; let kind: String; let fits: Bool; let reasons: [String]
        /// An assembly's parts whose weights are not on disk yet (fit is judged without them).
        var weights_missing: [String]? = nil
    }

    /// What `compat` and `assemble` say about parts whose weights are still to download.
    static func weightsNote(_ components: [String]) -> String {
        "weights not on disk yet for \(components.joined(separator: ", ")): `chimera list` says how to provide them"
    }

    func run() throws {
        do {
            let catalog = try catalogOptions.catalog()
            let checker = CompatibilityChecker(catalog: catalog, families: catalogOptions.families())
            if matrix {
                guard id == nil else { throw ValidationError("--matrix covers the whole catalogue; give no id with it") }
                let cells = checker.matrix()
                if json {
                    struct Table: Encodable { let encoders, connectors, language_models: [String]; let cells: [CompatibilityCell] }
                    try printJSON(Table(encoders: catalog.list(kind: .encoder).map(\.id), connectors: catalog.list(kind: .connector).map(\.id),
                                        language_models: catalog.list(kind: .languageModel).map(\.id), cells: cells))
                } else {
                    print(renderMatrix(cells, languageModels: catalog.list(kind: .languageModel).map(\.id)))
                }
                return
            }
            guard let id else { throw ValidationError("give a component or assembly id, or --matrix") }
            if let assembly = catalog.assemblies[id] {
                // Fit from the manifests, as --matrix judges it; downloads still to do are said apart.
                let problems = checker.problems(assembly: assembly, filesOnDisk: false)
                let missing = MissingWeights.of(assembly, in: catalog).map(\.component)
                if json {
                    try printJSON(Verdict(id: id, kind: "assembly", fits: problems.isEmpty, reasons: problems, weights_missing: missing))
                    return
                }
                print(problems.isEmpty ? "\(id): all parts fit" : "\(id) does not fit:\n" + problems.map { "  - \($0)" }.joined(separator: "\n"))
                if !missing.isEmpty { print(Self.weightsNote(missing)) }
                if !problems.isEmpty { throw ExitCode.failure }
                return
            }
            let subject = try catalog.component(id)
            var verdicts: [Verdict] = []
            // Fit from the manifests, as for assemblies and --matrix: files not on disk yet are
            // `chimera list`'s business.
            func fitProblems(_ problems: [CompatibilityProblem]) -> [CompatibilityProblem] { problems.filter { !$0.isMissingFile } }
            func add(_ other: ComponentManifest, _ problems: [CompatibilityProblem]) {
                let all = fitProblems(problems + checker.problems(of: other)).map(\.description)
                verdicts.append(Verdict(id: other.id, kind: other.kind.rawValue, fits: all.isEmpty, reasons: all))
            }
            switch subject.kind {
            case .encoder:
                for c in catalog.list(kind: .connector) { add(c, checker.problems(encoder: subject, connector: c)) }
            case .connector:
                for e in catalog.list(kind: .encoder) { add(e, checker.problems(encoder: e, connector: subject)) }
                for l in catalog.list(kind: .languageModel) { add(l, checker.problems(connector: subject, languageModel: l)) }
            case .languageModel:
                for c in catalog.list(kind: .connector) { add(c, checker.problems(connector: c, languageModel: subject)) }
            }
            // Whole encoder → connector → language model chains through the subject: these also
            // catch token counts over the context.
            var chains: [Verdict] = []
            for e in catalog.list(kind: .encoder) where subject.kind != .encoder || e.id == subject.id {
                for c in catalog.list(kind: .connector) where subject.kind != .connector || c.id == subject.id {
                    for l in catalog.list(kind: .languageModel) where subject.kind != .languageModel || l.id == subject.id {
                        let problems = fitProblems(checker.problems(encoder: e, connector: c, languageModel: l)).map(\.description)
                        chains.append(Verdict(id: "\(e.id) → \(c.id) → \(l.id)", kind: "chain", fits: problems.isEmpty, reasons: problems))
                    }
                }
            }
            if json { try printJSON(verdicts + chains); return }
            let subjectProblems = checker.problems(of: subject)
            let own = fitProblems(subjectProblems)
            if subjectProblems.contains(where: \.isMissingFile) {
                print("(\(id)'s files are not all on disk yet: `chimera list` says which and how to fetch them)")
            }
            if !own.isEmpty { print("\(id) itself has problems:\n" + own.map { "  - \($0)" }.joined(separator: "\n")) }
            let fits = verdicts.filter(\.fits), misfits = verdicts.filter { !$0.fits }
            print("Fits \(id):")
            print(fits.isEmpty ? "  (nothing)" : fits.map { "  ✓ \($0.id) (\($0.kind))" }.joined(separator: "\n"))
            if !misfits.isEmpty {
                print("Does not fit:")
                for v in misfits { print("  ✗ \(v.id) (\(v.kind)): \(v.reasons.joined(separator: "; "))") }
            }
            if !chains.isEmpty {
                print("Chains:")
                for v in chains { print(v.fits ? "  ✓ \(v.id)" : "  ✗ \(v.id): \(v.reasons.joined(separator: "; "))") }
            }
        } catch let code as ExitCode { throw code } catch { throw fail(error) }
    }
}

extension Compat {
    /// Rows encoder → connector, a column per language model (L1, L2, ... named above the table),
    /// "✓" or "✗" with the numbers of the reasons listed below it.
    func renderMatrix(_ cells: [CompatibilityCell], languageModels: [String]) -> String {
        var reasonNumbers: [String: Int] = [:], reasons: [String] = []
        func number(_ reason: String) -> Int {
            if let n = reasonNumbers[reason] { return n }
            reasons.append(reason); reasonNumbers[reason] = reasons.count
            return reasons.count
        }
        var rows: [(label: String, cells: [String])] = []
        var index: [String: Int] = [:]
        for cell in cells {
            let label = "\(cell.encoder) → \(cell.connector)"
            if index[label] == nil { index[label] = rows.count; rows.append((label, [])) }
            rows[index[label]!].cells.append(cell.fits ? "✓" : "✗" + cell.reasons.map { String(number($0)) }.joined(separator: ","))
        }
        let fitting = cells.filter(\.fits).count
        var lines = ["\(cells.count) chains, \(fitting) fit (✓ fits; ✗n: reason n below; weights and tokenizers on disk are not checked: see `chimera list`)", ""]
        for (i, lm) in languageModels.enumerated() { lines.append("  L\(i + 1)  \(lm)") }
        lines.append("")
        let labelWidth = max(20, rows.map(\.label.count).max() ?? 0)
        let columnWidth = max(4, (rows.flatMap(\.cells).map(\.count).max() ?? 0) + 1)
        func pad(_ s: String, _ n: Int) -> String { s + String(repeating: " ", count: max(0, n - s.count)) }
        lines.append(pad("ENCODER → CONNECTOR", labelWidth) + "  " + languageModels.indices.map { pad("L\($0 + 1)", columnWidth) }.joined())
        for row in rows { lines.append(pad(row.label, labelWidth) + "  " + row.cells.map { pad($0, columnWidth) }.joined()) }
        if !reasons.isEmpty {
            lines.append("")
            lines.append("Reasons:")
            for (i, reason) in reasons.enumerated() { lines.append("  \(i + 1). \(reason)") }
        }
        return lines.joined(separator: "\n")
    }
}

struct Assemble: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Write an assembly manifest for an encoder, a connector and a language model.")
    @OptionGroup var catalogOptions: CatalogOptions
    @Option(help: "Encoder id") var encoder: String
    @Option(help: "Connector id") var connector: String
    @Option(help: "Language model id") var llm: String
    @Option(help: "Assembly id (default: <encoder>+<connector>+<llm>)") var id: String?
    @Option(help: "Placeholder in prompts") var placeholder = "<image>"
    @Option(parsing: .unconditional, help: "Encoder hidden state to use (negative counts from the end)") var featureLayer = -2
    @Option(help: "patch (drop the first token) or full") var select = "patch"
    @Option(name: .shortAndLong, help: "Output file") var output: String

    func run() throws {
        do {
            let catalog = try catalogOptions.catalog()
            guard let selection = InputBinding.Selection(rawValue: select == "default" ? "patch" : select == "cls_patch" ? "full" : select) else {
                throw ValidationError("--select must be patch or full, found '\(select)'")
            }
            if let id, !isValidManifestID(id) { throw ValidationError("--id: \(manifestIDRule), found '\(id)'") }
            var assembly = Assembler.assembly(id: id ?? "\(encoder)+\(connector)+\(llm)", encoder: encoder, connector: connector,
                                              languageModel: llm, placeholder: placeholder, featureLayer: featureLayer, select: selection)
            let url = URL(fileURLWithPath: output)
            assembly.directory = url.deletingLastPathComponent()
            // Parts that fit are assembled before their weights are downloaded; a note says what is missing.
            try CompatibilityChecker(catalog: catalog, families: catalogOptions.families()).requireFit(assembly)
            let encoderJSON = JSONEncoder()
            encoderJSON.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            try writeOutputFile(try encoderJSON.encode(assembly), to: url)
            print(url.path)
            let missing = MissingWeights.of(assembly, in: catalog).map(\.component)
            if !missing.isEmpty { progress(Compat.weightsNote(missing)) }
        } catch let error as ValidationError { throw error } catch { throw fail(error) }
    }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Check manifest files against the schema and their families.")
    @OptionGroup var catalogOptions: CatalogOptions
    @Argument(help: "Manifest files") var files: [String]
    @Flag(help: "Do not require weight and tokenizer files on disk (catalogues ship manifests without weights)")
    var skipFileChecks = false

    func run() throws {
        var failures = 0
        let families = catalogOptions.families()
        for path in files {
            do {
                let manifest = try AnyManifest.load(contentsOf: URL(fileURLWithPath: path))
                var problems: [String] = []
                var catalog = try catalogOptions.catalog()
                let checker = CompatibilityChecker(catalog: catalog, families: families)
                switch manifest {
                case let .component(m):
                    problems = checker.problems(of: m).filter { !skipFileChecks || !$0.isMissingFile }.map(\.description)
                    for (i, file) in (m.weights?.files ?? []).enumerated() where !skipFileChecks && !FileManager.default.fileExists(atPath: m.resolve(file).path) {
                        problems.append("weights.files[\(i)]: \(m.resolve(file).path) does not exist")
                    }
                    if m.chatTemplate != nil { try catalog.load(directory: m.directory, recursive: false) }
                    problems += unknownChatTemplate(m.chatTemplate, in: catalog)
                case let .assembly(m):
                    try catalog.load(directory: m.directory, recursive: false)
                    problems = CompatibilityChecker(catalog: catalog, families: families).problems(assembly: m, filesOnDisk: !skipFileChecks)
                    problems += unknownChatTemplate(m.chatTemplate, in: catalog)
                case .template:
                    break  // decoding checked every field
                }
                if problems.isEmpty { print("\(path): ok (\(manifest.id))") } else {
                    failures += 1
                    FileHandle.standardError.write(Data("\(path): \(problems.joined(separator: "; "))\n".utf8))
                }
            } catch {
                failures += 1
                FileHandle.standardError.write(Data("\((error as? LocalizedError)?.errorDescription ?? "\(error)")\n".utf8))
            }
        }
        if failures > 0 { throw ExitCode.failure }
    }
}

/// How a user provides the weights the catalogue's manifests point at.
func weightsHelp(missingFolders: [String]) -> String {
    """
    [weights missing]: weights are not shipped. Download each component's source checkpoint (its "source", \
    see `chimera show ID`) as it is into the folder its manifest names, for example
      huggingface-cli download openai/clip-vit-large-patch14-336 --local-dir ~/.chimera/weights/clip-vit-large-patch14-336
    A folder may hold one model.safetensors or shards with model.safetensors.index.json; language models also need tokenizer.json.
    Missing: \(missingFolders.joined(separator: ", "))
    """
}

/// validate: a chat_template that names no template the catalogue (with the manifest's folder) holds.
func unknownChatTemplate(_ name: String?, in catalog: Catalog) -> [String] {
    guard let name, catalog.templates[name] == nil else { return [] }
    return ["chat_template: no template named '\(name)' (known: \(catalog.templates.keys.sorted().joined(separator: ", ")))"]
}
