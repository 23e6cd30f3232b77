import ArgumentParser
import Chimera
import ChimeraTensor
import ChimeraComponents
import Foundation

struct Plan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Parameters, weight bytes per precision, KV cache and peak memory of an assembly or component, and where it fits.",
        discussion: """
        Counts parameters by building every component over shapes-only tensors (no weights needed). \
        int8/int4 include one f16 scale per 32 weights; the KV cache is planned in --kv-cache's precision \
        (f32 by default, as generate and bench keep it, whatever the weights'); \
        peak = weights + KV cache for the context + the largest f32 working set of one forward pass. \
        A device fits when the peak is at most 90% of its memory.
        """)
    @OptionGroup var catalogOptions: CatalogOptions
    @Argument(help: "An assembly (id or file) or a component id") var id: String
    @Option(parsing: .unconditional, help: "Tokens of context to plan for (default: the language model's, at most 2048; at most the model's, and room for one item of each input and a prompt token)") var context: Int?
    @Option(help: "KV cache precision to plan for: f32 (generate's and bench's default), or f16 (their --kv-cache f16)") var kvCache = KVPrecision.f32
    @Flag(help: "Print JSON") var json = false

    func run() throws {
        do {
            let planner: Planner
            let plan: MemoryPlan
            if id.hasSuffix(".json") || FileManager.default.fileExists(atPath: id) {
                let (catalog, assembly) = try resolveAssembly(id, catalogOptions: catalogOptions)
                planner = Planner(catalog: catalog, families: catalogOptions.families())
                plan = try planner.plan(assembly: assembly, context: context, kvCache: kvCache)
            } else {
                planner = Planner(catalog: try catalogOptions.catalog(), families: catalogOptions.families())
                plan = try planner.plan(id, context: context, kvCache: kvCache)
            }
            if json { try printJSON(plan); return }
            print(render(plan))
        } catch { throw fail(error) }
    }

    func render(_ plan: MemoryPlan) -> String {
        let precisions = Precision.allCases.map(\.rawValue)
        let idWidth = max(9, plan.parts.map(\.id.count).max() ?? 0)
        func pad(_ s: String, _ n: Int, left: Bool = false) -> String {
            let fill = String(repeating: " ", count: max(0, n - s.count))
            return left ? fill + s : s + fill
        }
        let context = plan.contextTokens > 0 ? " (context \(plan.contextTokens) tokens)" : ""
        var lines = ["Plan for \(plan.subject)\(context)", ""]
        lines.append(pad("COMPONENT", idWidth) + "  " + pad("KIND", 15) + pad("PARAMETERS", 16, left: true))
        for part in plan.parts {
            lines.append(pad(part.id, idWidth) + "  " + pad(part.kind, 15) + pad(grouped(part.parameters), 16, left: true))
        }
        lines.append(pad("total", idWidth) + "  " + pad("", 15) + pad(grouped(plan.totalParameters), 16, left: true))
        lines.append("")
        let rows = [("weights", plan.weightBytes), ("KV cache (\(plan.kvCache.rawValue)) per 1k", plan.kvCacheBytesPer1kTokens),
                    (plan.contextTokens > 0 ? "peak at \(plan.contextTokens) tokens" : "peak", plan.peakBytes)]
        // As wide as the widest figure (a huge model's "262144.99 GiB") and a space.
        let column = 1 + max(10, (rows.flatMap { $0.1.values } + [plan.activationBytes]).map { bytes($0).count }.max() ?? 0)
        lines.append(pad("", 24) + precisions.map { pad($0, column, left: true) }.joined())
        for (label, values) in rows {
            lines.append(pad(label, 24) + precisions.map { pad(bytes(values[$0] ?? 0), column, left: true) }.joined())
        }
        lines.append(pad("(activations, f32)", 24) + pad(bytes(plan.activationBytes), column, left: true))
        lines.append("")
        lines.append(pad("FITS (peak ≤ 90% of memory)", 34) + precisions.map { pad($0, 6, left: true) }.joined())
        for fit in plan.fits {
            let name = "\(fit.device.name) (\(bytes(fit.device.memoryBytes)))"
            lines.append(pad(name, 34) + precisions.map { pad(fit.fits[$0] == true ? "✓" : "✗", 6, left: true) }.joined())
        }
        return lines.joined(separator: "\n")
    }

    func grouped(_ n: Int) -> String {
        let digits = Array(String(n))
        return digits.enumerated().map { i, c in (i > 0 && (digits.count - i) % 3 == 0 ? "," : "") + String(c) }.joined()
    }

    func bytes(_ n: Int) -> String {
        let gib = Double(n) / Double(1 << 30)
        if gib >= 1 { return String(format: "%.2f GiB", gib) }
        return String(format: "%.1f MiB", Double(n) / Double(1 << 20))
    }
}
