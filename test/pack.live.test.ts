/**
 * The published package as a user gets it: `npm pack`, then `npm install` of the tarball
 * into an empty project (from the npm registry, so this is slow), then the package's
 * exports (`v86box`, `v86box/testkit`, with types) and its `v86box` bin, booting the
 * bundled image offline.
 */
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join, resolve } from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { run } from "./helpers/childProcess.ts"

const repoRoot = resolve(".")
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

// The npm that runs `npm test` passes its own settings down as npm_* variables; the
// user's empty project must not see them.
const cleanEnv = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith("npm_")))

let tempDir: string
let project: string
let tarball: string

const inProject = (command: string, args: ReadonlyArray<string>, timeoutMillis = 300_000) =>
  run(command, args, { cwd: project, env: cleanEnv, timeoutMillis })

const succeeded = (result: { code: number | null; stdout: string; stderr: string }) => {
  if (result.code !== 0) throw new Error(`exit code ${result.code}\n${result.stdout}\n${result.stderr}`)
  return result.stdout
}

beforeAll(async () => {
  tempDir = await mkdtemp(join(tmpdir(), "v86box-pack-"))
  project = join(tempDir, "project")
  // `prepack` builds dist/ first.
  const packed = succeeded(
    await run(npm, ["pack", "--json", "--pack-destination", tempDir], { cwd: repoRoot, env: cleanEnv, timeoutMillis: 600_000 })
  )
  tarball = join(tempDir, JSON.parse(packed.slice(packed.indexOf("[")))[0].filename)
  await mkdir(project)
  await writeFile(join(project, "package.json"), JSON.stringify({ name: "empty", private: true, type: "module" }))
  // --prefer-offline: what the npm cache already holds is not fetched again.
  succeeded(await inProject(npm, ["install", "--no-audit", "--no-fund", "--prefer-offline", tarball], 900_000))
}, 1_800_000) // about a minute on a quiet 2-core machine; the limits are for a busy one

afterAll(async () => {
  await rm(tempDir, { recursive: true, force: true })
})

describe("the packed tarball, installed into an empty project", () => {
  it("holds the build, the image and the docs, not the tests or transcripts", async () => {
    const { stdout } = await run("tar", ["-tzf", tarball])
    const files = stdout.trim().split("\n").map((path) => path.replace(/^package\//, ""))
    expect(files).toEqual(expect.arrayContaining([
      "dist/src/index.js",
      "dist/src/index.d.ts",
      "dist/testkit/index.js",
      "dist/testkit/index.d.ts",
      "dist/src/cli/main.js",
      "dist/src/internal/v86Worker.mjs",
      "assets/manifest.json",
      "README.md"
    ]))
    expect(files.filter((path) => /^(test|transcripts|bench|image|src|testkit|examples|docs\/api)\//.test(path))).toEqual([])
  })

  it("imports v86box and v86box/testkit: boots the bundled image and replays a scripted transcript", async () => {
    await writeFile(join(project, "smoke.mjs"), `
import * as Effect from "effect/Effect"
import { V86Box } from "v86box"
import { Testkit, script } from "v86box/testkit"

const box = await V86Box.open()
try {
  const result = await box.exec("echo hi")
  console.log("live:", JSON.stringify(result))
} finally {
  await box.close()
}

const transcript = script([{ command: "date", stdout: "a scripted day\\n" }])
const replayed = await Effect.runPromise(
  Effect.flatMap(V86Box, (box) => box.exec("date")).pipe(
    Effect.provide(Testkit.layerReplay(transcript, { fingerprint: "ignore" }))
  )
)
console.log("replayed:", JSON.stringify(replayed))
`)
    const stdout = succeeded(await inProject(process.execPath, ["smoke.mjs"]))
    expect(stdout).toBe(
      'live: {"exitCode":0,"stdout":"hi\\n","stderr":""}\n' +
        'replayed: {"exitCode":0,"stdout":"a scripted day\\n","stderr":""}\n'
    )
  }, 330_000)

  it("has types for both entry points", async () => {
    await writeFile(join(project, "typed.ts"), `
import type { ExecResult, PromiseBox } from "v86box"
import { V86Box, CommandTimeout } from "v86box"
import { Testkit, script } from "v86box/testkit"
export const run = async (box: PromiseBox): Promise<ExecResult> => box.exec("true")
export const checks = [V86Box.open, CommandTimeout, Testkit.layerReplay, script] as const
// @ts-expect-error exec takes a string
export const wrong = (box: PromiseBox) => box.exec(42)
`)
    await writeFile(join(project, "tsconfig.json"), JSON.stringify({
      compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", strict: true, noEmit: true, skipLibCheck: true, types: [], lib: ["ES2022", "DOM", "ESNext.Disposable"] },
      files: ["typed.ts"]
    }))
    const tsc = join(repoRoot, "node_modules", "typescript", "bin", "tsc")
    succeeded(await inProject(process.execPath, [tsc, "-p", "tsconfig.json"]))
  }, 330_000)

  it("installs the v86box bin: exec -- echo hi", async () => {
    expect(await readdir(join(project, "node_modules", ".bin"))).toContain("v86box")
    const result = await inProject(join(project, "node_modules", ".bin", "v86box"), ["exec", "--", "echo", "hi"])
    expect({ code: result.code, stdout: result.stdout, stderr: result.stderr }).toEqual({ code: 0, stdout: "hi\n", stderr: "" })
  }, 330_000)
})
