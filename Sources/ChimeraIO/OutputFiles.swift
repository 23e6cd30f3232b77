import Foundation

/// Why a file or folder Chimera writes (import, quantize, assemble, plugin install) could not be
/// made, naming the path: Foundation's own errors on Linux name neither plainly
/// ("The operation could not be completed. (NSCocoaErrorDomain error 512.)").
public struct OutputError: LocalizedError, Equatable {
    public var path: String
    public var reason: String
    public var errorDescription: String? { "\(path): \(reason)" }
}

/// Creates `folder` and its missing parents, or throws OutputError naming what stops it (a file
/// on the path, a read-only place).
public func createOutputFolder(_ folder: URL) throws {
    var missing: [String] = [], path = folder.standardizedFileURL.path
    var isFolder: ObjCBool = false
    while !FileManager.default.fileExists(atPath: path, isDirectory: &isFolder) {
        missing.append(path)
        path = (path as NSString).deletingLastPathComponent
    }
    if !isFolder.boolValue {
        throw OutputError(path: folder.path, reason: missing.isEmpty ? "it is a file, not a folder" : "cannot create the output folder: \(path) is a file")
    }
    for path in missing.reversed() {
        if mkdir(path, 0o755) != 0, errno != EEXIST {
            let reason = String(cString: strerror(errno))
            throw OutputError(path: path, reason: "cannot create the output folder" + (missing.count > 1 ? " \(folder.path)" : "") + ": \(reason)")
        }
    }
}

/// Writes `data` to `file` (its folder created as needed), or throws OutputError with the reason.
public func writeOutputFile(_ data: Data, to file: URL) throws {
    do { try createOutputFolder(file.deletingLastPathComponent()) } catch let error as OutputError {
        throw OutputError(path: file.path, reason: "cannot write the file: \(error.path): \(error.reason)")
    }
    var isFolder: ObjCBool = false
    if FileManager.default.fileExists(atPath: file.path, isDirectory: &isFolder), isFolder.boolValue {
        throw OutputError(path: file.path, reason: "cannot write the file: a folder is there")
    }
    // Non-blocking, so that a FIFO nobody reads is an error (ENXIO) rather than an open that waits
    // forever; a pipe with a reader (-o /dev/stdout) is written as usual, blocking again.
    let descriptor = open(file.path, O_WRONLY | O_CREAT | O_TRUNC | O_NONBLOCK, 0o644)
    guard descriptor >= 0 else {
        let reason = errno == ENXIO ? "it is a FIFO that no process is reading" : String(cString: strerror(errno))
        throw OutputError(path: file.path, reason: "cannot write the file: \(reason)")
    }
    defer { close(descriptor) }
    _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) & ~O_NONBLOCK)
    try data.withUnsafeBytes { (bytes: UnsafeRawBufferPointer) in
        var done = 0
        while done < bytes.count {
            let n = write(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw OutputError(path: file.path, reason: "cannot write the file: \(String(cString: strerror(errno)))") }
            done += n
        }
    }
}

/// Copies a file, or a folder and everything in it, to `destination` (made as needed), or throws
/// OutputError naming what could not be read or written; files keep their permission bits. Anything that is neither a regular file
/// nor a folder (a FIFO, a device) is refused rather than read: FileManager's copy of a FIFO waits
/// forever for a writer.
public func copyOutputItem(_ source: URL, to destination: URL) throws {
    var isFolder: ObjCBool = false
    guard FileManager.default.fileExists(atPath: source.path, isDirectory: &isFolder) else {
        throw OutputError(path: source.path, reason: "cannot copy it: no such file or folder")
    }
    if isFolder.boolValue {
        try createOutputFolder(destination)
        let names: [String]
        do { names = try FileManager.default.contentsOfDirectory(atPath: source.path) } catch {
            throw OutputError(path: source.path, reason: "cannot read the folder")
        }
        for name in names.sorted() {
            let child = source.appendingPathComponent(name)
            var childIsFolder: ObjCBool = false
            if (try? FileManager.default.destinationOfSymbolicLink(atPath: child.path)) != nil,
               FileManager.default.fileExists(atPath: child.path, isDirectory: &childIsFolder), childIsFolder.boolValue {
                throw OutputError(path: child.path, reason: "cannot copy it: a link to a folder (it may lead back into the folder being copied)")
            }
            try copyOutputItem(child, to: destination.appendingPathComponent(name))
        }
        return
    }
    if let reason = notARegularFile(source.path) { throw OutputError(path: source.path, reason: "cannot copy it: \(reason)") }
    guard let data = FileManager.default.contents(atPath: source.path) else {
        throw OutputError(path: source.path, reason: "cannot copy it: the file is not readable")
    }
    try writeOutputFile(data, to: destination)
    // With the source's permission bits (a library or a helper program stays executable).
    var status = stat()
    if stat(source.path, &status) == 0, chmod(destination.path, status.st_mode & 0o777) != 0 {
        throw OutputError(path: destination.path, reason: "cannot set its permissions: \(String(cString: strerror(errno)))")
    }
}
