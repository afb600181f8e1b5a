/**
 * Every example runs with one command and prints what it promises (live VMs).
 */
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const run = async (file: string) => {
  const { stdout } = await promisify(execFile)("npx", ["tsx", file], { timeout: 240_000 })
  return stdout
}

describe("examples", () => {
  it("hello: uname, an exit code and its stderr, GNU tools", async () => {
    const output = await run("examples/hello.ts")
    expect(output).toMatch(/uname -a +→ Linux v86box-[0-9a-f]{8} .* i686 GNU\/Linux/)
    expect(output).toContain("exit code     → 3")
    expect(output).toContain("stderr        → to stderr")
    expect(output).toContain("GNU bash, version 5.2")
  }, 150_000)

  it("files: a file in, sorted in the guest, read back; users and errors; host mounts; a large file", async () => {
    const output = await run("examples/files.ts")
    expect(output).toContain("ranking.txt   → alice,93 | bob,88 | carol,71")
    expect(output).toContain("Permission denied")
    expect(output).toContain("NotFound")
    expect(output).toContain("host results  → 3 total")
    expect(output).toContain("read-only     → bash: line 1: /project/a.txt: Read-only file system")
    expect(output).toContain("8 MB in       → intact")
  }, 150_000)

  it("llm-tool: structured results, limits reported instead of thrown", async () => {
    const lines = (await run("examples/llm-tool.ts")).trim().split("\n").map((line) => JSON.parse(line))
    expect(lines.map((line) => [line.exitCode, line.stopped])).toEqual([
      [0, undefined],
      [2, undefined],
      [null, "output limit"],
      [null, "timeout"]
    ])
    expect(lines[0].stdout).toBe("3\n")
  }, 150_000)

  it("streaming: lines as they come from stdout and stderr; an endless command stopped after three lines", async () => {
    const output = await run("examples/streaming.ts")
    expect(output).toMatch(
      /^\+ *\d+ ms {2}stdout {2}fetch…\n\+ *\d+ ms {2}stdout {2}compile…\n\+ *\d+ ms {2}stdout {2}link…\n/
    )
    expect(output).toMatch(/\+ *\d+ ms {2}stderr {2}warning: 1 unused variable\n/)
    expect(output).toContain("exit code 0\n")
    expect(output).toContain("first lines of an endless command: tick 1, tick 2, tick 3 (then it was killed)")
    expect(output).toContain("ticker processes left in the guest: 0")
  }, 250_000)

  it("errors: an exit code as a result, each typed error caught by its tag", async () => {
    const output = await run("examples/errors.ts")
    expect(output).toContain(`ls /nope          → exit code 2, stderr "ls: cannot access '/nope': No such file or directory\\n"`)
    expect(output).toContain(`sleep, 5 s limit  → CommandTimeout: killed after 5000 ms`)
    expect(output).toContain("yes, 10 KB limit  → OutputLimitExceeded: killed past 10000 bytes, kept 10000 bytes of stdout")
    expect(output).toContain("empty cwd         → InvalidOptions: cwd: Expected a string at least 1 character(s) long")
    expect(output).toContain("the sandbox after → still fine")
  }, 250_000)

  it("transcripts: scripted guests replayed without a VM, a mismatch named", async () => {
    const output = await run("examples/transcripts.ts")
    expect(output).toContain("✓ reads the guest's answer")
    expect(output).toContain("✓ turns the guest's complaint into a typed error")
    expect(output).toMatch(/expected: .*du -sk '\/data'[\s\S]*actual: .*du -sk '\/home'/)
    expect(output).toMatch(/3 passed in \d+ ms, no VM booted/)
  }, 250_000)

  it("pool: forks of a prepared snapshot grade submissions, none sees another's files", async () => {
    const output = await run("examples/pool.ts")
    expect(output).toMatch(/snapshot of the prepared sandbox: \d+\.\d MiB/)
    expect(output).toMatch(/seq 10 \| paste -sd\+ \| bc +→ pass \(exit 0\)/)
    expect(output).toMatch(/echo 56 +→ fail: got '56' \(exit 1\)/)
    expect(output.match(/→ pass \(exit 0\)/g)).toHaveLength(3)
    expect(output).not.toContain("leaked")
  }, 250_000)
})
