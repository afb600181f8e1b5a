/**
 * The `v86box` command line, run as a child process the way a user runs it: exit codes,
 * stdout and stderr kept apart and streamed, scripts with arguments, help, usage
 * errors, and the asset commands (live VMs for exec and run).
 */
import * as Effect from "effect/Effect"
import { createHash } from "node:crypto"
import { access, cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { type RunOptions, run, start, stripAnsi } from "./helpers/childProcess.ts"
import { serveDirectory } from "./helpers/httpServer.ts"

const cliArgs = (args: ReadonlyArray<string>) => ["--import", "tsx", "src/cli/main.ts", ...args]
const v86box = (args: ReadonlyArray<string>, options?: RunOptions) =>
  run(process.execPath, cliArgs(args), { timeoutMillis: 300_000, ...options })

// Each run of the CLI starts Node and tsx, and most boot a VM: seconds each on a quiet
// 2-core machine, minutes on a busy one. The limits are for the busy one.
const oneBoot = 330_000
const severalRuns = 600_000

let tempDir: string
beforeAll(async () => {
  tempDir = await mkdtemp(join(tmpdir(), "v86box-cli-"))
})
afterAll(async () => {
  await rm(tempDir, { recursive: true, force: true })
})

describe("v86box exec", () => {
  it("streams stdout and stderr apart, as they come, and exits with the command's exit code", async () => {
    // The command prints, then waits for a line that the test sends only after seeing
    // that print: proof that output streams before the command ends.
    const cli = start(process.execPath, cliArgs([
      "exec",
      "--stdin",
      "--",
      `echo ready; read line; echo "got $line"; echo oops >&2; exit 7`
    ]), { timeoutMillis: 300_000 })
    await cli.stdoutIncludes("ready\n")
    cli.child.stdin?.end("go\n")
    const { code, stdout, stderr } = await cli.finished
    expect({ code, stdout, stderr }).toEqual({ code: 7, stdout: "ready\ngot go\n", stderr: "oops\n" })
  }, oneBoot)

  it("--timeout kills the command: its output so far, one line saying why, exit code 124", async () => {
    // 15 s: on a busy 2-core machine the guest's first echo can take seconds.
    const { code, stdout, stderr } = await v86box(["exec", "--timeout", "15", "--", "echo started; sleep 60"])
    expect(code).toBe(124)
    expect(stdout).toBe("started\n")
    expect(stderr).toMatch(/(^|\n)v86box: command timed out after 15000 ms and was killed: echo started; sleep 60\n$/)
  }, oneBoot)
})

describe("v86box run", () => {
  it("runs a host script with bash, its arguments as $1…, and exits with its exit code", async () => {
    const script = join(tempDir, "greet.sh")
    await writeFile(script, [
      "#!/bin/bash",
      'echo "script=$(basename "$0") args=$#"',
      'for arg in "$@"; do echo "[$arg]"; done',
      "echo to-stderr >&2",
      "exit 5",
      ""
    ].join("\n"))
    const { code, stdout, stderr } = await v86box(["run", script, "two words", "it's", "--", "--memory", "$HOME"])
    expect(code).toBe(5)
    expect(stdout).toBe("script=greet.sh args=4\n[two words]\n[it's]\n[--memory]\n[$HOME]\n")
    expect(stderr).toBe("to-stderr\n")
  }, oneBoot)

  it("a script that does not exist is a usage error, before anything boots", async () => {
    const { code, stderr } = await v86box(["run", join(tempDir, "missing.sh")])
    expect(code).toBe(2)
    expect(stripAnsi(stderr)).toContain("missing.sh' must exist")
  }, oneBoot)
})

describe("v86box snapshot create", () => {
  it("saves a sandbox after its setup command; --from-snapshot starts from it", async () => {
    const file = join(tempDir, "prepared.v86state")
    const created = await v86box(["snapshot", "create", file, "--", "echo prepared > /root/mark; echo setup done"])
    expect(created.code).toBe(0)
    expect(created.stdout).toBe("setup done\n")
    expect(created.stderr).toMatch(/^snapshot written: .*prepared\.v86state \(\d+\.\d MiB\)\n$/)
    const forked = await v86box(["exec", "--from-snapshot", file, "--", "cat /root/mark"])
    expect([forked.code, forked.stdout]).toEqual([0, "prepared\n"])
  }, severalRuns)

  it("a failing setup command writes nothing and passes its exit code on", async () => {
    const file = join(tempDir, "never.v86state")
    const { code, stderr } = await v86box(["snapshot", "create", file, "--", "exit 3"])
    expect(code).toBe(3)
    expect(stderr).toBe("v86box: the setup command exited with code 3; no snapshot was written\n")
    await expect(access(file)).rejects.toThrow("ENOENT")
  }, oneBoot)
})

describe("help and usage errors", () => {
  it("--help on the command and on each subcommand", async () => {
    const root = await v86box(["--help"])
    expect(root.code).toBe(0)
    for (const command of ["exec", "run", "assets fetch", "assets verify", "snapshot create"]) {
      expect(stripAnsi(root.stdout)).toContain(`- ${command} `)
    }
    const exec = await v86box(["exec", "--help"])
    expect(exec.code).toBe(0)
    expect(stripAnsi(exec.stdout)).toMatch(/--memory MiB[\s\S]*--timeout duration[\s\S]*--assets-dir directory/)
    const verify = await v86box(["assets", "verify", "--help"])
    expect(verify.code).toBe(0)
    expect(stripAnsi(verify.stdout)).toContain("--image-dir")
  }, severalRuns)

  it("a bad option value, an unknown subcommand or option: a message and exit code 2", async () => {
    const badValue = await v86box(["exec", "--timeout", "soon", "--", "true"])
    expect([badValue.code, stripAnsi(badValue.stderr).trim()]).toEqual([
      2,
      '--timeout: "soon" is not a duration: give seconds ("30") or a duration ("500 millis", "2 minutes")'
    ])
    const unknownCommand = await v86box(["exce", "--", "true"])
    expect(unknownCommand.code).toBe(2)
    expect(stripAnsi(unknownCommand.stderr)).toContain("Invalid subcommand")
    const unknownOption = await v86box(["assets", "verify", "--bogus"])
    expect(unknownOption.code).toBe(2)
    expect(stripAnsi(unknownOption.stderr)).toContain("--bogus")
  }, severalRuns)

  it("options the sandbox refuses are a usage error too, not a stack trace", async () => {
    const { code, stderr } = await v86box(["exec", "--memory", "16", "--", "true"])
    expect(code).toBe(2)
    expect(stderr).toMatch(/^v86box: invalid options:\n {2}- memoryMB: /)
    expect(stderr).not.toMatch(/\n\s+at /)
  }, oneBoot)
})

describe("v86box assets", () => {
  it("verify: the bundled image matches its manifest", async () => {
    const { code, stdout } = await v86box(["assets", "verify", "--assets-dir", tempDir])
    expect(code).toBe(0)
    expect(stdout).toMatch(/^ok {2}kernel .*bzImage$/m)
    expect(stdout).toContain("image files and 0 cached downloads match their sha256")
  }, oneBoot)

  it("verify: a corrupted copy of the image fails, naming the file, with exit code 1", async () => {
    const copy = join(tempDir, "image-copy")
    await cp("assets", copy, { recursive: true })
    const bios = await readFile(join(copy, "seabios.bin"))
    bios[1000] = bios[1000]! ^ 0xff
    await writeFile(join(copy, "seabios.bin"), bios)
    const { code, stdout, stderr } = await v86box(["assets", "verify", "--image-dir", copy])
    expect(code).toBe(1)
    expect(stdout).toBe("")
    expect(stderr).toMatch(/^v86box: asset "bios": bundled file ".*seabios.bin" is corrupt: expected sha256 \w{64}, got \w{64}\n$/)
  }, oneBoot)

  it("fetch: downloads into the cache once, then finds it there; verify checks the cache", async () => {
    const served = join(tempDir, "served")
    const assetsDir = join(tempDir, "fetched")
    await cp("assets", served, { recursive: true })
    const bytes = await readFile(join(served, "bzImage"))
    const sha256 = createHash("sha256").update(bytes).digest("hex")
    await Effect.runPromise(Effect.scoped(Effect.gen(function*() {
      const server = yield* serveDirectory(served)
      const args = ["assets", "fetch", "--url", server.url("/bzImage"), "--sha256", sha256, "--assets-dir", assetsDir]
      const first = yield* Effect.promise(() => v86box(args))
      expect(first.code).toBe(0)
      expect(first.stdout).toBe(`kernel: downloaded, ${(bytes.length / 1048576).toFixed(1)} MiB, sha256 ok → ` +
        `${join(assetsDir, "cache", sha256)}\n`)
      expect(first.stderr).toMatch(/kernel {3}\[#{24}\] 100%/) // the progress bar, one line per quarter in a pipe
      const again = yield* Effect.promise(() => v86box(args))
      expect(again.stdout).toMatch(/^kernel: already cached/)
      expect(server.requests()).toBe(1)

      const wrong = yield* Effect.promise(() => v86box([...args.slice(0, 5), "0".repeat(64), ...args.slice(6)]))
      expect(wrong.code).toBe(1)
      expect(wrong.stderr).toMatch(/\nv86box: asset "kernel": sha256 mismatch for .*nothing was cached\n$/)
    })))
    expect(await readdir(join(assetsDir, "cache"))).toEqual([sha256])

    const verified = await v86box(["assets", "verify", "--assets-dir", assetsDir])
    expect(verified.stdout).toContain("and 1 cached downloads match their sha256")
    const cached = join(assetsDir, "cache", sha256)
    await writeFile(cached, bytes.subarray(0, 1000))
    const damaged = await v86box(["assets", "verify", "--assets-dir", assetsDir])
    expect(damaged.code).toBe(1)
    expect(damaged.stderr).toContain(`cached file "${cached}" is corrupt`)
  }, severalRuns)

  it("fetch without --url/--sha256 or --sources is a usage error", async () => {
    const { code, stderr } = await v86box(["assets", "fetch"])
    expect([code, stderr]).toEqual([2, "v86box: give --url and --sha256, or --sources FILE\n"])
  }, oneBoot)
})
