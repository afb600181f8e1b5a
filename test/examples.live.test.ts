/**
 * Every example runs with one command and prints what it promises (live VMs).
 */
import { execFile } from "node:child_process"
import { promisify } from "node:util"
import { describe, expect, it } from "vitest"

const run = async (file: string) => {
  const { stdout } = await promisify(execFile)("npx", ["tsx", file], { timeout: 120_000 })
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
})
