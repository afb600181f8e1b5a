/**
 * Files, stdin, environment and users. The same suite runs against a live VM
 * (test/files.live.test.ts) and against its recording (test/files.replay.test.ts), so
 * everything it sends is deterministic: no host randomness, no host clock.
 */
import * as PlatformError from "@effect/platform/Error"
import * as FileSystem from "@effect/platform/FileSystem"
import { expect, type Vitest } from "@effect/vitest"
import * as Chunk from "effect/Chunk"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Stream from "effect/Stream"
import * as fc from "fast-check"
import { createHash } from "node:crypto"
import * as GuestFileSystem from "../../src/GuestFileSystem.ts"
import { V86Box } from "../../src/index.ts"

const encoder = new TextEncoder()
const decoder = new TextDecoder()
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex")
const concat = (chunks: Iterable<Uint8Array>) => new Uint8Array(Buffer.concat([...chunks]))

/** Every byte value, twice, in a fixed shuffled order. */
const allBytes = Uint8Array.from({ length: 512 }, (_, index) => (index * 167 + 13) % 256)

/** 66 KB of text: more than the 64 KiB stdin window, and cheap to keep in a transcript. */
const manyLines = Array.from({ length: 6000 }, (_, index) => `line ${String(index).padStart(5, "0")}\n`).join("")

/** Fails unless `effect` fails with a SystemError of this reason, method and path. */
const expectSystemError = <A>(
  effect: Effect.Effect<A, PlatformError.PlatformError>,
  expected: { readonly reason: PlatformError.SystemErrorReason; readonly method: string; readonly path: string }
) =>
  Effect.gen(function*() {
    const error = yield* Effect.flip(effect)
    if (error._tag !== "SystemError") throw new Error(`expected a SystemError, got ${error._tag}: ${error.message}`)
    expect({ reason: error.reason, method: error.method, path: error.pathOrDescriptor }).toEqual(expected)
    return error
  })

/** Names the shell would mangle if anything were left unquoted. */
const awkwardName = "it's a \"name\" with\nnewline, ünïcödé 🎉, $HOME `id` \\ * ? [a] -rf ;&|<>"

export const filesSuite = (it: Vitest.MethodsNonLive<V86Box | FileSystem.FileSystem, boolean>) => {
  it.effect("writeFile and readFile carry every byte value exactly", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/bytes")
      yield* fs.writeFile("/tmp/bytes/all", allBytes)
      expect(yield* fs.readFile("/tmp/bytes/all")).toEqual(allBytes)
      yield* fs.writeFile("/tmp/bytes/empty", new Uint8Array(0))
      expect(yield* fs.readFile("/tmp/bytes/empty")).toEqual(new Uint8Array(0))
    }))

  it.effect("writeFileString and readFileString: UTF-8, and names the shell would mangle", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const box = yield* V86Box
      yield* fs.makeDirectory("/tmp/names")
      const text = "héllo wörld ✓ 日本語 🎉\n"
      yield* fs.writeFileString(`/tmp/names/${awkwardName}`, text)
      expect(yield* fs.readFileString(`/tmp/names/${awkwardName}`)).toBe(text)
      expect(yield* fs.readDirectory("/tmp/names")).toEqual([awkwardName])
      // The guest agrees on the size: the bytes are UTF-8, not UTF-16 or lossy.
      const size = yield* box.exec("wc -c < /tmp/names/*")
      expect(size.stdout.trim()).toBe(String(encoder.encode(text).length))
    }))

  it.effect("writeFile flags and mode: append, exclusive create, executable", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const box = yield* V86Box
      yield* fs.makeDirectory("/tmp/flags")
      yield* fs.writeFileString("/tmp/flags/log", "one\n")
      yield* fs.writeFileString("/tmp/flags/log", "two\n", { flag: "a" })
      expect(yield* fs.readFileString("/tmp/flags/log")).toBe("one\ntwo\n")
      yield* expectSystemError(fs.writeFileString("/tmp/flags/log", "three\n", { flag: "wx" }), {
        reason: "AlreadyExists",
        method: "writeFile",
        path: "/tmp/flags/log"
      })
      expect(yield* fs.readFileString("/tmp/flags/log")).toBe("one\ntwo\n")
      yield* fs.writeFileString("/tmp/flags/run.sh", "#!/bin/sh\necho ran\n", { mode: 0o755 })
      expect((yield* fs.stat("/tmp/flags/run.sh")).mode & 0o777).toBe(0o755)
      expect((yield* box.exec("/tmp/flags/run.sh")).stdout).toBe("ran\n")
      yield* expectSystemError(fs.writeFileString("/tmp/no/such/dir/file", "x"), {
        reason: "NotFound",
        method: "writeFile",
        path: "/tmp/no/such/dir/file"
      })
      yield* expectSystemError(fs.writeFileString("/tmp", "x"), { reason: "BadResource", method: "writeFile", path: "/tmp" })
    }))

  it.effect("stat: type, size, mode, owner, times; NotFound", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/stat")
      yield* fs.writeFileString("/tmp/stat/file", "12345")
      yield* fs.symlink("file", "/tmp/stat/link")
      const file = yield* fs.stat("/tmp/stat/file")
      expect(file.type).toBe("File")
      expect(file.size).toBe(FileSystem.Size(5))
      expect(file.mode & 0o777).toBe(0o644)
      expect(file.uid).toEqual(Option.some(0))
      expect(file.gid).toEqual(Option.some(0))
      expect(file.nlink).toEqual(Option.some(1))
      // The guest clock was set from the host's at boot (or at recording).
      expect(Option.getOrThrow(file.mtime).getFullYear()).toBeGreaterThanOrEqual(2025)
      expect((yield* fs.stat("/tmp/stat")).type).toBe("Directory")
      expect((yield* fs.stat("/dev/null")).type).toBe("CharacterDevice")
      // stat follows links, as Node's does.
      expect((yield* fs.stat("/tmp/stat/link")).type).toBe("File")
      yield* expectSystemError(fs.stat("/tmp/stat/missing"), { reason: "NotFound", method: "stat", path: "/tmp/stat/missing" })
    }))

  it.effect("exists, access", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      expect(yield* fs.exists("/etc/passwd")).toBe(true)
      expect(yield* fs.exists("/etc/no-such-file")).toBe(false)
      yield* fs.access("/etc/passwd", { readable: true, writable: true })
      yield* expectSystemError(fs.access("/etc/no-such-file"), { reason: "NotFound", method: "access", path: "/etc/no-such-file" })
    }))

  it.effect("makeDirectory (recursive), readDirectory (recursive), and their errors", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/tree/a/b", { recursive: true })
      yield* fs.makeDirectory("/tmp/tree/a/b", { recursive: true })
      yield* fs.writeFileString("/tmp/tree/a/b/leaf", "x")
      yield* fs.writeFileString("/tmp/tree/top", "x")
      expect(yield* fs.readDirectory("/tmp/tree")).toEqual(["a", "top"])
      expect(yield* fs.readDirectory("/tmp/tree", { recursive: true })).toEqual(["a", "a/b", "a/b/leaf", "top"])
      yield* expectSystemError(fs.makeDirectory("/tmp/tree/a"), { reason: "AlreadyExists", method: "makeDirectory", path: "/tmp/tree/a" })
      yield* expectSystemError(fs.makeDirectory("/tmp/tree/x/y"), { reason: "NotFound", method: "makeDirectory", path: "/tmp/tree/x/y" })
      yield* expectSystemError(fs.readDirectory("/tmp/tree/top"), { reason: "BadResource", method: "readDirectory", path: "/tmp/tree/top" })
      yield* expectSystemError(fs.readDirectory("/tmp/tree/none"), { reason: "NotFound", method: "readDirectory", path: "/tmp/tree/none" })
    }))

  it.effect("remove (recursive, force), rename, and their errors", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/rm/dir/sub", { recursive: true })
      yield* fs.writeFileString("/tmp/rm/dir/sub/file", "x")
      yield* expectSystemError(fs.remove("/tmp/rm/dir"), { reason: "BadResource", method: "remove", path: "/tmp/rm/dir" })
      yield* fs.rename("/tmp/rm/dir", "/tmp/rm/moved")
      expect(yield* fs.readDirectory("/tmp/rm", { recursive: true })).toEqual(["moved", "moved/sub", "moved/sub/file"])
      yield* expectSystemError(fs.rename("/tmp/rm/dir", "/tmp/rm/other"), { reason: "NotFound", method: "rename", path: "/tmp/rm/dir" })
      yield* fs.remove("/tmp/rm/moved/sub/file")
      yield* fs.remove("/tmp/rm/moved", { recursive: true })
      expect(yield* fs.readDirectory("/tmp/rm")).toEqual([])
      yield* expectSystemError(fs.remove("/tmp/rm/moved"), { reason: "NotFound", method: "remove", path: "/tmp/rm/moved" })
      yield* fs.remove("/tmp/rm/moved", { force: true })
    }))

  it.effect("copyFile and copy (recursive, overwrite only when asked)", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/cp/src/deep", { recursive: true })
      yield* fs.writeFile("/tmp/cp/src/deep/bin", allBytes)
      yield* fs.copyFile("/tmp/cp/src/deep/bin", "/tmp/cp/bin")
      expect(yield* fs.readFile("/tmp/cp/bin")).toEqual(allBytes)
      yield* expectSystemError(fs.copyFile("/tmp/cp/src", "/tmp/cp/x"), { reason: "BadResource", method: "copyFile", path: "/tmp/cp/src" })
      yield* expectSystemError(fs.copyFile("/tmp/cp/none", "/tmp/cp/x"), { reason: "NotFound", method: "copyFile", path: "/tmp/cp/none" })
      yield* fs.copy("/tmp/cp/src", "/tmp/cp/dst")
      expect(yield* fs.readDirectory("/tmp/cp/dst", { recursive: true })).toEqual(["deep", "deep/bin"])
      expect(yield* fs.readFile("/tmp/cp/dst/deep/bin")).toEqual(allBytes)
      yield* fs.writeFileString("/tmp/cp/src/deep/bin", "changed")
      yield* fs.copy("/tmp/cp/src", "/tmp/cp/dst")
      expect(yield* fs.readFile("/tmp/cp/dst/deep/bin")).toEqual(allBytes)
      yield* fs.copy("/tmp/cp/src", "/tmp/cp/dst", { overwrite: true })
      expect(yield* fs.readFileString("/tmp/cp/dst/deep/bin")).toBe("changed")
    }))

  it.effect("chmod, chown, truncate, utimes", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/meta")
      yield* fs.writeFileString("/tmp/meta/file", "0123456789")
      yield* fs.chmod("/tmp/meta/file", 0o600)
      yield* fs.chown("/tmp/meta/file", 1000, 100)
      yield* fs.truncate("/tmp/meta/file", 4)
      yield* fs.utimes("/tmp/meta/file", new Date("2001-09-09T01:46:40Z"), 1500000000.25)
      const info = yield* fs.stat("/tmp/meta/file")
      expect(info.mode & 0o7777).toBe(0o600)
      expect([info.uid, info.gid]).toEqual([Option.some(1000), Option.some(100)])
      expect(info.size).toBe(FileSystem.Size(4))
      expect(info.atime).toEqual(Option.some(new Date("2001-09-09T01:46:40Z")))
      expect(info.mtime).toEqual(Option.some(new Date(1500000000250)))
      yield* fs.truncate("/tmp/meta/file")
      expect(yield* fs.readFile("/tmp/meta/file")).toEqual(new Uint8Array(0))
      yield* expectSystemError(fs.chmod("/tmp/meta/none", 0o600), { reason: "NotFound", method: "chmod", path: "/tmp/meta/none" })
      yield* expectSystemError(fs.truncate("/tmp/meta/none"), { reason: "NotFound", method: "truncate", path: "/tmp/meta/none" })
    }))

  it.effect("symlink, readLink, realPath, link", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/links/dir", { recursive: true })
      yield* fs.writeFileString("/tmp/links/dir/target", "x")
      yield* fs.symlink("dir/target", "/tmp/links/soft")
      expect(yield* fs.readLink("/tmp/links/soft")).toBe("dir/target")
      expect(yield* fs.realPath("/tmp/links/soft")).toBe("/tmp/links/dir/target")
      expect(yield* fs.realPath("/tmp/links/dir/../soft")).toBe("/tmp/links/dir/target")
      yield* fs.link("/tmp/links/dir/target", "/tmp/links/hard")
      expect((yield* fs.stat("/tmp/links/hard")).nlink).toEqual(Option.some(2))
      yield* expectSystemError(fs.symlink("anything", "/tmp/links/soft"), { reason: "AlreadyExists", method: "symlink", path: "/tmp/links/soft" })
      yield* expectSystemError(fs.readLink("/tmp/links/none"), { reason: "NotFound", method: "readLink", path: "/tmp/links/none" })
      yield* expectSystemError(fs.realPath("/tmp/links/none"), { reason: "NotFound", method: "realPath", path: "/tmp/links/none" })
    }))

  it.scoped("makeTempDirectory and makeTempFile, plain and scoped", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const directory = yield* fs.makeTempDirectory({ prefix: "work-" })
      expect(directory).toMatch(/^\/tmp\/work-[A-Za-z0-9]{6}$/)
      expect((yield* fs.stat(directory)).type).toBe("Directory")
      const file = yield* fs.makeTempFile({ directory, prefix: "in-", suffix: ".txt" })
      expect(file.startsWith(`${directory}/in-`)).toBe(true)
      expect(file.endsWith(".txt")).toBe(true)
      expect(yield* fs.readFile(file)).toEqual(new Uint8Array(0))
      const scoped = yield* Effect.scoped(
        Effect.tap(fs.makeTempDirectoryScoped(), (path) => fs.writeFileString(`${path}/x`, "x"))
      )
      expect(yield* fs.exists(scoped)).toBe(false)
      const scopedFile = yield* Effect.scoped(fs.makeTempFileScoped())
      expect(yield* fs.exists(scopedFile)).toBe(false)
    }))

  it.effect("stream (offset, bytesToRead) and sink", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/streams")
      yield* Stream.run(Stream.fromIterable(["first\n", "second\n", "third\n"].map((line) => encoder.encode(line))), fs.sink("/tmp/streams/out"))
      expect(yield* fs.readFileString("/tmp/streams/out")).toBe("first\nsecond\nthird\n")
      const part = yield* Stream.runCollect(fs.stream("/tmp/streams/out", { offset: 6, bytesToRead: 7 }))
      expect(decoder.decode(concat(part))).toBe("second\n")
      const whole = yield* Stream.runCollect(fs.stream("/tmp/streams/out"))
      expect(decoder.decode(concat(whole))).toBe("first\nsecond\nthird\n")
      yield* expectSystemError(Stream.runCollect(fs.stream("/tmp/streams/none")), { reason: "NotFound", method: "stream", path: "/tmp/streams/none" })
      yield* expectSystemError(Stream.run(Stream.make(encoder.encode("x")), fs.sink("/tmp/streams/no/dir")), {
        reason: "NotFound",
        method: "sink",
        path: "/tmp/streams/no/dir"
      })
    }))

  it.scoped("open: a File reads and writes at its position", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      yield* fs.makeDirectory("/tmp/open")
      const file = yield* fs.open("/tmp/open/data", { flag: "w+" })
      yield* file.writeAll(encoder.encode("hello world"))
      yield* file.seek(6, "start")
      yield* file.writeAll(encoder.encode("WORLD"))
      yield* file.seek(0, "start")
      expect(Option.map(yield* file.readAlloc(5), (bytes) => decoder.decode(bytes))).toEqual(Option.some("hello"))
      expect((yield* file.stat).size).toBe(FileSystem.Size(11))
      yield* expectSystemError(Effect.scoped(fs.open("/tmp/open/none")), { reason: "NotFound", method: "open", path: "/tmp/open/none" })
    }))

  it.effect("a path with a NUL byte is a BadArgument, and nothing runs", () =>
    Effect.gen(function*() {
      const fs = yield* FileSystem.FileSystem
      const error = yield* Effect.flip(fs.readFile("/tmp/a\0b"))
      expect(error._tag).toBe("BadArgument")
      expect(error.message).toContain("readFile")
    }))

  it.effect("as user: permissions are the guest's, files are owned by uid 1000", () =>
    Effect.gen(function*() {
      const fs = GuestFileSystem.make(yield* V86Box, { user: "user" })
      yield* expectSystemError(fs.writeFileString("/root/secret", "x"), { reason: "PermissionDenied", method: "writeFile", path: "/root/secret" })
      yield* expectSystemError(fs.readDirectory("/root"), { reason: "PermissionDenied", method: "readDirectory", path: "/root" })
      yield* expectSystemError(fs.chown("/etc/passwd", 1000, 1000), { reason: "PermissionDenied", method: "chown", path: "/etc/passwd" })
      yield* expectSystemError(fs.access("/etc/passwd", { writable: true }), { reason: "PermissionDenied", method: "access", path: "/etc/passwd" })
      yield* fs.writeFileString("/home/user/mine", "x")
      const info = yield* fs.stat("/home/user/mine")
      expect([info.uid, info.gid]).toEqual([Option.some(1000), Option.some(1000)])
    }))

  it.effect.prop(
    "arbitrary bytes under arbitrary names round-trip through writeFile and readFile",
    {
      name: fc.string({
        unit: fc.oneof(fc.constantFrom(" ", "'", "\"", "\n", "\\", "$", "`", "*", "-", "é", "🎉"), fc.fullUnicode()),
        minLength: 1,
        maxLength: 24
      }).filter((name) => !name.includes("/") && !name.includes("\0") && name !== "." && name !== ".."),
      bytes: fc.uint8Array({ maxLength: 600 })
    },
    ({ bytes, name }) =>
      Effect.gen(function*() {
        const fs = yield* FileSystem.FileSystem
        const path = `/tmp/property/${name}`
        yield* fs.makeDirectory("/tmp/property", { recursive: true })
        yield* fs.writeFile(path, bytes)
        expect(yield* fs.readFile(path)).toEqual(bytes)
        expect(yield* fs.readDirectory("/tmp/property")).toContain(name)
      }),
    // A fixed seed: the replayed run must send what the recorded one sent.
    { timeout: 300_000, fastCheck: { numRuns: 25, seed: 20261126 } }
  )
}

export const stdinSuite = (it: Vitest.MethodsNonLive<V86Box | FileSystem.FileSystem, boolean>) => {
  it.effect("stdin as a string to cat, as bytes to wc -c, as a Stream to sha256sum", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      expect((yield* box.exec("cat", { stdin: "héllo\nwörld\n" })).stdout).toBe("héllo\nwörld\n")
      expect((yield* box.exec("wc -c", { stdin: allBytes })).stdout.trim()).toBe(String(allBytes.length))
      const bytes = encoder.encode(manyLines)
      const chunks = Stream.fromIterable(Array.from({ length: 6 }, (_, index) => bytes.subarray(index * 11000, (index + 1) * 11000)))
      const hashed = yield* box.exec("sha256sum", { stdin: chunks })
      expect(hashed.stdout).toBe(`${sha256(bytes)}  -\n`)
    }))

  it.scoped("an interactive read loop fed line by line through Process.stdin; ending the input sends EOF", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const process = yield* box.start('while read -r line; do echo "got $line"; done; echo "bye"', { stdin: "pipe" })
      const input = yield* Mailbox.make<Uint8Array>()
      const feeding = yield* Effect.fork(Stream.run(Mailbox.toStream(input), process.stdin))
      const output = yield* Stream.toPull(process.stdout)
      let received = ""
      const readUntil = (text: string) =>
        Effect.gen(function*() {
          while (!received.includes(text)) {
            const chunks = yield* output.pipe(Effect.catchAll(() => Effect.succeed(Chunk.empty<Uint8Array>())))
            received += decoder.decode(concat(chunks))
          }
        })
      for (const word of ["one", "two words", "three"]) {
        yield* input.offer(encoder.encode(`${word}\n`))
        // The reply comes before the next line is sent: the command really is interactive.
        yield* readUntil(`got ${word}\n`)
      }
      yield* input.end
      yield* readUntil("bye\n")
      expect(received).toBe("got one\ngot two words\ngot three\nbye\n")
      expect(yield* process.exitCode).toBe(0)
      expect(Exit.isSuccess(yield* Effect.exit(feeding.await.pipe(Effect.flatten)))).toBe(true)
    }))

  it.scoped("Process.stdin as a sink: cat gets every byte, then EOF", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const process = yield* box.start("cat; echo end", { stdin: "pipe" })
      const stdout = yield* Effect.fork(Stream.runCollect(process.stdout))
      yield* Stream.run(Stream.make(allBytes.subarray(0, 200), allBytes.subarray(200)), process.stdin)
      const received = concat(yield* stdout.await.pipe(Effect.flatten))
      expect(received).toEqual(concat([allBytes, encoder.encode("end\n")]))
      expect(yield* process.exitCode).toBe(0)
    }))
}

export const environmentSuite = (it: Vitest.MethodsNonLive<V86Box | FileSystem.FileSystem, boolean>) => {
  it.effect("env adds variables to a clean default environment; the host's never reaches the guest", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      process.env.V86BOX_SECRET = "host-only-secret"
      const result = yield* box.exec("env -0", { env: { GREETING: "hello world", MULTI: "a\nb" } }).pipe(
        Effect.ensuring(Effect.sync(() => delete process.env.V86BOX_SECRET))
      )
      const variables = new Map(
        result.stdout.split("\0").filter((entry) => entry.length > 0).map((entry) => {
          const at = entry.indexOf("=")
          return [entry.slice(0, at), entry.slice(at + 1)] as const
        })
      )
      expect(variables.get("GREETING")).toBe("hello world")
      expect(variables.get("MULTI")).toBe("a\nb")
      expect(variables.get("LANG")).toBe("C.UTF-8")
      expect(variables.get("TERM")).toBe("dumb")
      expect(variables.get("PATH")).toBe("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
      expect(variables.get("HOME")).toBe("/root")
      // Only the defaults, the added ones, and what bash itself exports.
      expect([...variables.keys()].sort()).toEqual(
        ["GREETING", "HOME", "LANG", "LOGNAME", "MULTI", "PATH", "PWD", "SHELL", "SHLVL", "TERM", "USER", "_"]
      )
      expect(result.stdout).not.toContain("host-only-secret")
    }))

  it.effect("env can replace a default", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const result = yield* box.exec("echo \"$LANG $HOME\"", { env: { LANG: "C", HOME: "/tmp" } })
      expect(result.stdout).toBe("C /tmp\n")
    }))

  it.effect("cwd: the user's home by default, or the directory given", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      expect((yield* box.exec("pwd")).stdout).toBe("/root\n")
      expect((yield* box.exec("pwd", { user: "user" })).stdout).toBe("/home/user\n")
      expect((yield* box.exec("pwd", { cwd: "/usr/bin" })).stdout).toBe("/usr/bin\n")
      yield* box.exec("mkdir -p '/tmp/with space'")
      expect((yield* box.exec("pwd; ls -d ../with*", { cwd: "/tmp/with space" })).stdout).toBe("/tmp/with space\n../with space\n")
    }))

  it.effect("user: root, user (uid 1000, HOME=/home/user), or a numeric uid", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const ids = 'echo "$(id -u) $(id -g) $HOME $USER"'
      expect((yield* box.exec(ids)).stdout).toBe("0 0 /root root\n")
      expect((yield* box.exec(ids, { user: "root" })).stdout).toBe("0 0 /root root\n")
      expect((yield* box.exec(ids, { user: "user" })).stdout).toBe("1000 1000 /home/user user\n")
      expect((yield* box.exec(ids, { user: 4242, cwd: "/tmp" })).stdout).toBe("4242 4242 / 4242\n")
    }))

  it.effect("files a command writes as user are owned by uid 1000; it cannot write root's", () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const fs = yield* FileSystem.FileSystem
      const written = yield* box.exec("echo mine > /tmp/by-user; touch /root/nope", { user: "user" })
      expect(written.exitCode).toBe(1)
      expect(written.stderr).toContain("Permission denied")
      const info = yield* fs.stat("/tmp/by-user")
      expect([info.uid, info.gid]).toEqual([Option.some(1000), Option.some(1000)])
    }))
}
