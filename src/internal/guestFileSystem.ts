/**
 * The guest's filesystem as an `@effect/platform` FileSystem, built on `box.start`: every
 * operation is one small bash script of coreutils commands. Paths are single-quoted (any
 * byte but NUL survives), file contents travel as raw bytes on stdin and stdout, and a
 * failure is decided from the guest's own error message, whose last words are the
 * strerror text of the errno the tool met.
 */
import * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import type * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import type { GuestFileSystemOptions } from "../GuestFileSystem.ts"
import type { StdinInput } from "../Options.ts"
import type { ExitStatus, Process } from "../Process.ts"
import type { V86Box } from "../V86Box.ts"
import { concatBytes } from "./bytes.mjs"

/** A single-quoted shell word that bash reads back as exactly `text` (which must not contain NUL). */
export const quote = (text: string): string => `'${text.replaceAll("'", `'\\''`)}'`

/**
 * The errnos the guest's tools report, by their glibc message. The reasons follow
 * `@effect/platform-node` where it maps the errno; EPERM and EROFS are a denied permission
 * too, which is what a sandbox user needs to tell apart.
 */
const errnos: ReadonlyArray<{ readonly code: string; readonly message: string; readonly reason: PlatformError.SystemErrorReason }> = [
  { code: "ENOENT", message: "No such file or directory", reason: "NotFound" },
  { code: "EACCES", message: "Permission denied", reason: "PermissionDenied" },
  { code: "EPERM", message: "Operation not permitted", reason: "PermissionDenied" },
  { code: "EROFS", message: "Read-only file system", reason: "PermissionDenied" },
  { code: "EEXIST", message: "File exists", reason: "AlreadyExists" },
  { code: "EISDIR", message: "Is a directory", reason: "BadResource" },
  { code: "ENOTDIR", message: "Not a directory", reason: "BadResource" },
  { code: "ELOOP", message: "Too many levels of symbolic links", reason: "BadResource" },
  { code: "ENAMETOOLONG", message: "File name too long", reason: "BadResource" },
  { code: "EBUSY", message: "Device or resource busy", reason: "Busy" },
  { code: "ENOTEMPTY", message: "Directory not empty", reason: "Unknown" },
  { code: "EINVAL", message: "Invalid argument", reason: "Unknown" },
  { code: "ENOSPC", message: "No space left on device", reason: "Unknown" },
  { code: "EXDEV", message: "Invalid cross-device link", reason: "Unknown" },
  { code: "EIO", message: "Input/output error", reason: "Unknown" }
]

/** Messages of GNU tools that name an errno without its strerror text. */
const toolMessages: ReadonlyArray<{ readonly pattern: string; readonly code: string }> = [
  { pattern: "cannot overwrite existing file", code: "EEXIST" }, // bash, set -o noclobber
  { pattern: "cannot overwrite directory", code: "EISDIR" }, // cp, mv
  { pattern: "hard link not allowed for directory", code: "EPERM" } // ln
]

/** What a guest tool's stderr says went wrong: the errno and its reason, or Unknown. */
export const classify = (stderr: string): { readonly code: string | undefined; readonly reason: PlatformError.SystemErrorReason } => {
  const lines = stderr.split("\n").map((line) => line.trimEnd()).filter((line) => line.length > 0)
  for (const line of lines.reverse()) {
    const errno = errnos.find(({ message }) => line.endsWith(message))
    if (errno !== undefined) return errno
    const tool = toolMessages.find(({ pattern }) => line.includes(pattern))
    if (tool !== undefined) return errnos.find(({ code }) => code === tool.code)!
  }
  return { code: undefined, reason: "Unknown" }
}

/** A script step that fails the way a tool would, with errno `code`'s message. */
const fail = (code: string): string => `{ echo '${errnos.find((errno) => errno.code === code)!.message}' >&2; exit 1; }`

const systemError = (
  method: string,
  path: string,
  reason: PlatformError.SystemErrorReason,
  description: string,
  cause?: unknown
) =>
  new PlatformError.SystemError({
    module: "FileSystem",
    method,
    reason,
    pathOrDescriptor: path,
    description,
    ...(cause === undefined ? {} : { cause })
  })

const failedScript = (method: string, path: string, status: ExitStatus, stderr: string) => {
  const { code, reason } = classify(stderr)
  const message = stderr.trim().length > 0 ? stderr.trim() : `exit code ${status.exitCode}`
  return systemError(method, path, reason, code === undefined ? message : `${code}: ${message}`)
}

/** The sandbox failed under the operation: the machine died, or a command timeout fired. */
const sandboxError = (method: string, path: string) => (error: { readonly _tag: string; readonly message: string }) =>
  error._tag === "InvalidOptions"
    ? new PlatformError.BadArgument({ module: "FileSystem", method, description: error.message, cause: error })
    : systemError(method, path, error._tag === "CommandTimeout" ? "TimedOut" : "Unknown", error.message, error)

const checkPaths = (method: string, ...paths: ReadonlyArray<string>) =>
  paths.some((path) => path.includes("\0"))
    ? Effect.fail(new PlatformError.BadArgument({ module: "FileSystem", method, description: "a path must not contain a NUL byte" }))
    : Effect.void

const decoder = new TextDecoder()

/** Output ending in a NUL or a newline, without it: how the scripts below print a path. */
const withoutTerminator = (bytes: Uint8Array): string => decoder.decode(bytes.subarray(0, Math.max(0, bytes.length - 1)))

/** NUL-separated names, as `find -printf '%P\0'` writes them. */
const nulSeparated = (bytes: Uint8Array): Array<string> =>
  bytes.length === 0 ? [] : withoutTerminator(bytes).split("\0")

const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0")

/** `stat` output: every field a number, no name, so any path parses. Birth time 0 means unknown. */
const statFormat = "%f %s %.9X %.9Y %.9Z %.9W %d %i %h %u %g %r %o %b"
const statScript = (path: string) => `stat -L -c '${statFormat}' -- ${quote(path)}`

const fileTypes: ReadonlyArray<readonly [number, FileSystem.File.Type]> = [
  [0o100000, "File"],
  [0o040000, "Directory"],
  [0o120000, "SymbolicLink"],
  [0o060000, "BlockDevice"],
  [0o020000, "CharacterDevice"],
  [0o010000, "FIFO"],
  [0o140000, "Socket"]
]

/** Parses one line of `statFormat`. */
export const parseStat = (line: string): FileSystem.File.Info | undefined => {
  const fields = line.trim().split(" ")
  if (fields.length !== 14 || !fields.every((field) => /^[0-9a-f]+(\.[0-9]+)?$/.test(field))) return undefined
  const [modeHex, size, atime, mtime, _ctime, birthtime, dev, ino, nlink, uid, gid, rdev, blksize, blocks] = fields as [
    string,
    ...Array<string>
  ]
  const mode = parseInt(modeHex, 16)
  const time = (seconds: string | undefined) => {
    const value = Number(seconds)
    return Number.isFinite(value) && value > 0 ? Option.some(new Date(Math.round(value * 1000))) : Option.none()
  }
  const number = (text: string | undefined) => Option.some(Number(text))
  return {
    type: fileTypes.find(([bits]) => (mode & 0o170000) === bits)?.[1] ?? "Unknown",
    mtime: time(mtime),
    atime: time(atime),
    birthtime: time(birthtime),
    dev: Number(dev),
    ino: number(ino),
    mode,
    nlink: number(nlink),
    uid: number(uid),
    gid: number(gid),
    rdev: number(rdev),
    size: FileSystem.Size(BigInt(size ?? "0")),
    blksize: Option.some(FileSystem.Size(BigInt(blksize ?? "0"))),
    blocks: number(blocks)
  }
}

/**
 * Opens `path` for writing as `flag` says, with `command`'s stdout there: `cat` copies
 * stdin into it, `cat -- FILE` a staged file, `:` only creates or truncates it. A mode
 * applies to a file it creates.
 */
const writeScript = (path: string, flag: FileSystem.OpenFlag, mode: number | undefined, command: string) => {
  const target = quote(path)
  const lines: Array<string> = []
  if (flag.startsWith("r")) lines.push(`[ -e ${target} ] || ${fail("ENOENT")}`)
  // noclobber makes `>` create the file with O_EXCL.
  if (flag.includes("x")) lines.push("set -o noclobber")
  if (mode !== undefined) lines.push(`[ -e ${target} ] || created=1`)
  const redirect = flag.startsWith("r") ? "1<>" : flag.startsWith("a") && !flag.includes("x") ? ">>" : ">"
  lines.push(`${command} ${redirect} ${target} || exit`)
  if (mode !== undefined) lines.push(`[ -z "$created" ] || chmod ${octal(mode)} -- ${target}`)
  return lines.join("\n")
}

/** What `open` checks or creates before the first read or write, as open(2) with `flag` would. */
const openScript = (path: string, flag: FileSystem.OpenFlag, mode: number | undefined) =>
  flag === "r"
    ? `[ -e ${quote(path)} ] || ${fail("ENOENT")}\n[ -r ${quote(path)} ] || ${fail("EACCES")}`
    : writeScript(path, flag, mode, ":")

/** Prints `path` from byte `offset` on, `length` bytes of it or all. */
const readScript = (path: string, offset: bigint, length: bigint | undefined) =>
  offset === 0n && length === undefined
    ? `cat -- ${quote(path)}`
    : `dd if=${quote(path)} iflag=skip_bytes,count_bytes skip=${offset} ${length === undefined ? "" : `count=${length} `}bs=65536 status=none`

/** Writes stdin into `path` at byte `offset` (at its end when appending), keeping what follows. */
const writeAtScript = (path: string, offset: bigint, append: boolean) =>
  append
    ? `cat >> ${quote(path)}`
    : `dd of=${quote(path)} oflag=seek_bytes conv=notrunc seek=${offset} bs=65536 status=none`

/** A command the filesystem runs: its stdout, its stdin, and how it ended as a PlatformError. */
interface Launched {
  readonly stdout: Stream.Stream<Uint8Array, PlatformError.PlatformError>
  readonly stdin: Sink.Sink<void, Uint8Array, never, PlatformError.PlatformError>
  /** Waits for the command's end; fails with the error its stderr names when it exited non-zero. */
  readonly finished: Effect.Effect<void, PlatformError.PlatformError>
}

/** What the guest filesystem needs of a sandbox: it is built from commands. */
export type CommandRunner = Pick<V86Box.Service, "exec" | "start">

/**
 * A faster way in for large files than the console: the bytes are staged where the guest
 * can read them (src/internal/hostShares.ts), and the path it reads them at is answered,
 * or `undefined` when staging is unavailable. The staged copy lives as long as the scope.
 */
export interface BulkWrites {
  /** Files smaller than this go through the console, which costs less to set up. */
  readonly minimumBytes: number
  readonly stage: (bytes: Uint8Array) => Effect.Effect<string | undefined, unknown, Scope.Scope>
}

/**
 * Where a live sandbox keeps its BulkWrites, so every filesystem made of it (any user)
 * uses them. A replayed or recorded sandbox has none: its transcript holds console bytes only.
 */
export const bulkWritesKey: unique symbol = Symbol.for("v86box/bulkWrites")

const bulkWritesOf = (box: CommandRunner): BulkWrites | undefined =>
  (box as CommandRunner & { readonly [bulkWritesKey]?: BulkWrites })[bulkWritesKey]

/** Makes the guest's filesystem available as an `@effect/platform` FileSystem. */
export const make = (box: CommandRunner, options: GuestFileSystemOptions = {}): FileSystem.FileSystem => {
  const bulkWrites = bulkWritesOf(box)
  const launch = (
    method: string,
    path: string,
    script: string,
    stdin?: StdinInput
  ): Effect.Effect<Launched, PlatformError.PlatformError, Scope.Scope> =>
    Effect.gen(function*() {
      const toError = sandboxError(method, path)
      const process: Process = yield* box.start(script, {
        ...(options.user === undefined ? {} : { user: options.user }),
        ...(stdin === undefined ? {} : { stdin })
      }).pipe(Effect.mapError(toError))
      // Read at once: stdout and stderr share the guest's output credit.
      const stderr = yield* Stream.runCollect(process.stderr).pipe(
        Effect.map((chunks) => decoder.decode(concatBytes(chunks))),
        Effect.mapError(toError),
        Effect.forkScoped
      )
      const finished = Effect.gen(function*() {
        const status = yield* Effect.mapError(process.exit, toError)
        if (status.exitCode === 0) return
        const message = yield* Fiber.join(stderr)
        return yield* Effect.fail(failedScript(method, path, status, message))
      })
      return {
        stdout: Stream.mapError(process.stdout, toError),
        stdin: Sink.mapError(process.stdin, toError),
        finished
      }
    })

  /** A script's stdout as a stream that fails, at its end, if the script failed. */
  const output = (method: string, path: string, script: string): Stream.Stream<Uint8Array, PlatformError.PlatformError> =>
    Stream.unwrapScoped(
      Effect.map(launch(method, path, script), (launched) => Stream.concat(launched.stdout, Stream.drain(Stream.fromEffect(launched.finished))))
    )

  /** Runs a script to its end: its stdout bytes, or the error it reported. */
  const run = (
    method: string,
    path: string,
    script: string,
    stdin?: StdinInput
  ): Effect.Effect<Uint8Array, PlatformError.PlatformError> =>
    Effect.scoped(
      Effect.gen(function*() {
        const launched = yield* launch(method, path, script, stdin)
        const stdout = yield* Stream.runCollect(launched.stdout)
        yield* launched.finished
        return concatBytes(stdout)
      })
    )

  const runPaths = (method: string, paths: ReadonlyArray<string>, script: string, stdin?: StdinInput) =>
    Effect.zipRight(checkPaths(method, ...paths), run(method, paths[0]!, script, stdin))

  const stat = (path: string, method = "stat") =>
    Effect.flatMap(runPaths(method, [path], statScript(path)), (bytes) => {
      const info = parseStat(decoder.decode(bytes))
      return info === undefined
        ? Effect.fail(systemError(method, path, "InvalidData", `cannot parse the guest's stat output: ${decoder.decode(bytes)}`))
        : Effect.succeed(info)
    })

  const remove = (path: string, removeOptions?: FileSystem.RemoveOptions, method = "remove") =>
    Effect.asVoid(
      runPaths(method, [path], `rm ${removeOptions?.recursive ? "-r " : ""}${removeOptions?.force ? "-f " : ""}-- ${quote(path)}`)
    )

  /**
   * `mktemp -d` in `directory` (default /tmp) with `prefix`, as Node's mkdtemp would name it.
   * `$(…)` drops trailing newlines: a "." printed after the name keeps them, and is cut off
   * again with the newline.
   */
  const tempDirectory = (tempOptions: FileSystem.MakeTempDirectoryOptions | undefined) => {
    const template = `${(tempOptions?.directory ?? "/tmp").replace(/\/+$/, "")}/${tempOptions?.prefix ?? ""}XXXXXX`
    return { template, step: `dir=$(mktemp -d -- ${quote(template)} && echo .) && dir=\${dir%??}` }
  }
  const printPath = (variable: string) => `printf '%s\\0' "$${variable}"`

  const makeTempDirectory = (tempOptions?: FileSystem.MakeTempDirectoryOptions, method = "makeTempDirectory") => {
    const { step, template } = tempDirectory(tempOptions)
    return Effect.map(runPaths(method, [template], `${step} && ${printPath("dir")}`), withoutTerminator)
  }

  /** As Node does: a new temporary directory, and in it a file with a random name. */
  const makeTempFile = (tempOptions?: FileSystem.MakeTempFileOptions, method = "makeTempFile") => {
    const { step, template } = tempDirectory(tempOptions)
    const suffix = tempOptions?.suffix ?? ""
    const file = `file=$(mktemp --suffix=${quote(suffix)} -- "$dir/XXXXXXXXXXXX" && echo .) && file=\${file%??}`
    return Effect.map(runPaths(method, [template, suffix], `${step} && ${file} && ${printPath("file")}`), withoutTerminator)
  }

  const parentOf = (path: string) => path.slice(0, Math.max(1, path.lastIndexOf("/")))

  const stream = (path: string, streamOptions?: FileSystem.StreamOptions) =>
    Stream.unwrap(
      Effect.as(
        checkPaths("stream", path),
        output(
          "stream",
          path,
          readScript(
            path,
            FileSystem.Size(streamOptions?.offset ?? 0),
            streamOptions?.bytesToRead === undefined ? undefined : FileSystem.Size(streamOptions.bytesToRead)
          )
        )
      )
    )

  const sink = (path: string, sinkOptions?: FileSystem.SinkOptions) =>
    Sink.unwrapScoped(
      Effect.gen(function*() {
        yield* checkPaths("sink", path)
        const launched = yield* launch("sink", path, writeScript(path, sinkOptions?.flag ?? "w", sinkOptions?.mode, "cat"), "pipe")
        yield* Effect.forkScoped(Stream.runDrain(launched.stdout))
        return Sink.zipRight(launched.stdin, Sink.fromEffect(launched.finished))
      })
    )

  let nextDescriptor = 3
  const open = (path: string, openOptions?: FileSystem.OpenFileOptions) =>
    Effect.gen(function*() {
      const flag = openOptions?.flag ?? "r"
      const append = flag.startsWith("a")
      yield* runPaths("open", [path], openScript(path, flag, openOptions?.mode))
      return new GuestFile(FileSystem.FileDescriptor(nextDescriptor++), append, {
        stat: stat(path),
        read: (offset, length) => run("read", path, readScript(path, offset, length)),
        write: (offset, bytes) => Effect.asVoid(run("write", path, writeAtScript(path, offset, append), bytes)),
        truncate: (length) => Effect.asVoid(run("truncate", path, `truncate -s ${length} -- ${quote(path)}`))
      })
    })

  const derived = FileSystem.make({
    access: (path, accessOptions) => {
      const target = quote(path)
      const steps = [`[ -e ${target} ] || ${fail("ENOENT")}`]
      if (accessOptions?.readable) steps.push(`[ -r ${target} ] || ${fail("EACCES")}`)
      if (accessOptions?.writable) steps.push(`[ -w ${target} ] || ${fail("EACCES")}`)
      return Effect.asVoid(runPaths("access", [path], steps.join("; ")))
    },
    chmod: (path, mode) => Effect.asVoid(runPaths("chmod", [path], `chmod ${octal(mode)} -- ${quote(path)}`)),
    chown: (path, uid, gid) => {
      // -1 leaves that id as it is, as in chown(2).
      const owner = `${uid >= 0 ? Math.trunc(uid) : ""}${gid >= 0 ? `:${Math.trunc(gid)}` : ""}`
      return owner === "" ? Effect.asVoid(stat(path, "chown")) : Effect.asVoid(runPaths("chown", [path], `chown ${owner} -- ${quote(path)}`))
    },
    copy: (fromPath, toPath, copyOptions) =>
      Effect.asVoid(
        runPaths(
          "copy",
          [fromPath, toPath],
          `cp -R -T ${copyOptions?.overwrite ? "" : "-n "}${copyOptions?.preserveTimestamps ? "--preserve=timestamps " : ""}-- ${
            quote(fromPath)
          } ${quote(toPath)}`
        )
      ),
    copyFile: (fromPath, toPath) =>
      Effect.asVoid(
        runPaths("copyFile", [fromPath, toPath], `[ ! -d ${quote(fromPath)} ] || ${fail("EISDIR")}; cp -T -- ${quote(fromPath)} ${quote(toPath)}`)
      ),
    link: (fromPath, toPath) => Effect.asVoid(runPaths("link", [fromPath, toPath], `ln -T -- ${quote(fromPath)} ${quote(toPath)}`)),
    makeDirectory: (path, directoryOptions) =>
      Effect.asVoid(
        runPaths(
          "makeDirectory",
          [path],
          `mkdir ${directoryOptions?.recursive ? "-p " : ""}${directoryOptions?.mode === undefined ? "" : `-m ${octal(directoryOptions.mode)} `}-- ${
            quote(path)
          }`
        )
      ),
    makeTempDirectory: (tempOptions) => makeTempDirectory(tempOptions),
    makeTempDirectoryScoped: (tempOptions) =>
      Effect.acquireRelease(
        makeTempDirectory(tempOptions, "makeTempDirectoryScoped"),
        (directory) => Effect.orDie(remove(directory, { recursive: true, force: true }, "makeTempDirectoryScoped"))
      ),
    makeTempFile: (tempOptions) => makeTempFile(tempOptions),
    makeTempFileScoped: (tempOptions) =>
      Effect.acquireRelease(
        makeTempFile(tempOptions, "makeTempFileScoped"),
        (file) => Effect.orDie(remove(parentOf(file), { recursive: true, force: true }, "makeTempFileScoped"))
      ),
    open,
    readDirectory: (path, directoryOptions) => {
      const target = quote(path)
      const depth = directoryOptions?.recursive ? "" : "-maxdepth 1 "
      // find lists a file given as the start without complaint; readdir(2) would not.
      const script = `[ -d ${target} ] || { [ -e ${target} ] && ${fail("ENOTDIR")} || ${fail("ENOENT")}; }; find -H ${target} -mindepth 1 ${depth}-printf '%P\\0'`
      return Effect.map(runPaths("readDirectory", [path], script), (bytes) => nulSeparated(bytes).sort())
    },
    readFile: (path) => runPaths("readFile", [path], `cat -- ${quote(path)}`),
    readLink: (path) => Effect.map(runPaths("readLink", [path], `readlink -v -z -- ${quote(path)}`), withoutTerminator),
    realPath: (path) => Effect.map(runPaths("realPath", [path], `realpath -e -z -- ${quote(path)}`), withoutTerminator),
    remove: (path, removeOptions) => remove(path, removeOptions),
    rename: (oldPath, newPath) => Effect.asVoid(runPaths("rename", [oldPath, newPath], `mv -f -T -- ${quote(oldPath)} ${quote(newPath)}`)),
    stat: (path) => stat(path),
    symlink: (target, path) => Effect.asVoid(runPaths("symlink", [path, target], `ln -s -T -- ${quote(target)} ${quote(path)}`)),
    truncate: (path, length) =>
      Effect.asVoid(
        runPaths(
          "truncate",
          [path],
          `[ -e ${quote(path)} ] || ${fail("ENOENT")}; truncate -c -s ${FileSystem.Size(length ?? 0)} -- ${quote(path)}`
        )
      ),
    utimes: (path, atime, mtime) => {
      const seconds = (time: Date | number) => (typeof time === "number" ? time : time.getTime() / 1000).toFixed(9)
      const target = quote(path)
      return Effect.asVoid(
        runPaths(
          "utimes",
          [path],
          `[ -e ${target} ] || ${fail("ENOENT")}; touch -c -a -d @${seconds(atime)} -- ${target} && touch -c -m -d @${seconds(mtime)} -- ${target}`
        )
      )
    },
    watch: (path) =>
      Stream.fail(systemError("watch", path, "Unknown", "watching files is not supported inside the sandbox")),
    writeFile: (path, data, writeOptions) => {
      const flag = writeOptions?.flag ?? "w"
      const mode = writeOptions?.mode
      const throughConsole = runPaths("writeFile", [path], writeScript(path, flag, mode, "cat"), data)
      if (bulkWrites === undefined || data.length < bulkWrites.minimumBytes) return Effect.asVoid(throughConsole)
      return Effect.asVoid(Effect.scoped(Effect.gen(function*() {
        yield* checkPaths("writeFile", path)
        const staged = yield* bulkWrites.stage(data).pipe(
          Effect.mapError((error) => systemError("writeFile", path, "Unknown", `cannot stage the file for the guest: ${String(error)}`, error))
        )
        if (staged === undefined) return yield* throughConsole
        return yield* run("writeFile", path, writeScript(path, flag, mode, `cat -- ${quote(staged)}`))
      })))
    }
  })
  // FileSystem.make derives these from `open`, one guest command per chunk; one command per stream is faster.
  return { ...derived, stream, sink }
}

/** What an open file does in the guest: one command each, at the position given. */
interface FileOperations {
  readonly stat: Effect.Effect<FileSystem.File.Info, PlatformError.PlatformError>
  readonly read: (offset: bigint, length: bigint) => Effect.Effect<Uint8Array, PlatformError.PlatformError>
  readonly write: (offset: bigint, bytes: Uint8Array) => Effect.Effect<void, PlatformError.PlatformError>
  readonly truncate: (length: bigint) => Effect.Effect<void, PlatformError.PlatformError>
}

/**
 * An open file of the guest. The guest keeps no descriptor: the handle is the path and a
 * position kept here, and each read or write is one guest command at that position.
 */
class GuestFile implements FileSystem.File {
  readonly [FileSystem.FileTypeId]: FileSystem.FileTypeId = FileSystem.FileTypeId
  private position = 0n
  private readonly lock = Effect.unsafeMakeSemaphore(1)

  constructor(
    readonly fd: FileSystem.File.Descriptor,
    private readonly append: boolean,
    private readonly operations: FileOperations
  ) {}

  get stat() {
    return this.operations.stat
  }

  readonly sync = Effect.void

  seek(offset: FileSystem.SizeInput, from: FileSystem.SeekMode) {
    return this.lock.withPermits(1)(Effect.sync(() => {
      this.position = from === "start" ? FileSystem.Size(offset) : this.position + FileSystem.Size(offset)
    }))
  }

  readAlloc(size: FileSystem.SizeInput) {
    return this.lock.withPermits(1)(Effect.suspend(() =>
      Effect.map(this.operations.read(this.position, FileSystem.Size(size)), (bytes) => {
        this.position += BigInt(bytes.length)
        return bytes.length === 0 ? Option.none() : Option.some(bytes)
      })
    ))
  }

  read(buffer: Uint8Array) {
    return Effect.map(this.readAlloc(buffer.length), (bytes) => {
      const read = Option.getOrElse(bytes, () => new Uint8Array(0))
      buffer.set(read)
      return FileSystem.Size(read.length)
    })
  }

  truncate(length?: FileSystem.SizeInput) {
    const size = FileSystem.Size(length ?? 0)
    return this.lock.withPermits(1)(Effect.map(this.operations.truncate(size), () => {
      if (!this.append && this.position > size) this.position = size
    }))
  }

  write(buffer: Uint8Array) {
    return this.lock.withPermits(1)(Effect.suspend(() =>
      Effect.map(this.operations.write(this.position, buffer), () => {
        if (!this.append) this.position += BigInt(buffer.length)
        return FileSystem.Size(buffer.length)
      })
    ))
  }

  writeAll(buffer: Uint8Array) {
    return Effect.asVoid(this.write(buffer))
  }
}
