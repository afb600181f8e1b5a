/**
 * The standby (`standby: true`) against live VMs: the next sandbox of the process is taken
 * ready and warmed up, yet it is as fresh as any other (its own identity and clock, none
 * of the previous sandbox's files, host mounts served), a standby made from an older state
 * file is never used, and a standby keeps no process alive.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { execFile } from "node:child_process"
import { copyFileSync, mkdtempSync, renameSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { V86Box, type V86BoxOptions } from "../src/index.ts"
import * as Standby from "../src/internal/standby.ts"
import { runningWorkerCount } from "../src/internal/v86Machine.ts"
import { guestProcessCount, settledProcessCount } from "./reliability/support.ts"

const withBox = <A, E>(options: V86BoxOptions, use: (box: V86Box.Service) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(Layer.build(V86Box.layer(options)), (context) => use(Context.get(context, V86Box))))

/** Waits until the standby for `stateFile` has finished warming up. */
const standbyWarm = (stateFile: string) =>
  Effect.gen(function*() {
    for (let waited = 0; waited < 120_000; waited += 250) {
      if (Standby.stateOf(stateFile) === "warm") return
      yield* Effect.sleep("250 millis")
    }
    throw new Error(`no warm standby after 2 minutes (${Standby.stateOf(stateFile)})`)
  })

const identity = (box: V86Box.Service) =>
  Effect.map(
    box.exec("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; hostname; date +%s"),
    (result) => result.stdout.trim().split("\n")
  )

afterAll(() => Effect.runPromise(Standby.clear))

describe("standby", () => {
  it.live("a sandbox opened right after a release takes the standby, resuming or warming, not a new emulator", () =>
    Effect.gen(function*() {
      const stateFile = join(mkdtempSync(join(tmpdir(), "v86box-standby-")), "booted.v86state")
      const options: V86BoxOptions = { standby: true, stateFile }
      yield* withBox(options, (box) => box.exec("true"))
      // No wait: the release has only begun making the standby (resuming it, then warm-up
      // commands); taking it waits for the resume and for at most one cheap command.
      const stateAtOpen = Standby.stateOf(stateFile)
      const next = yield* withBox(options, (box) =>
        Effect.all({ status: box.status, echoed: box.exec("echo next") }))
      expect(stateAtOpen).not.toBe("warm")
      expect(next.status.startedFrom).toBe("standby")
      expect(next.echoed.stdout).toBe("next\n")
    }), 240_000)

  it.live("the next sandbox is the warmed-up standby, and as fresh as a resumed one", () =>
    Effect.gen(function*() {
      const directory = mkdtempSync(join(tmpdir(), "v86box-standby-"))
      const stateFile = join(directory, "booted.v86state")
      const shared = mkdtempSync(join(tmpdir(), "v86box-standby-share-"))
      writeFileSync(join(shared, "from-host.txt"), "served by this sandbox's file server\n")
      const options: V86BoxOptions = { standby: true, stateFile }

      const first = yield* withBox(options, (box) =>
        Effect.gen(function*() {
          yield* box.fs.writeFileString("/root/left-behind.txt", "first sandbox\n")
          const processes = yield* guestProcessCount(box)
          return { status: yield* box.status, identity: yield* identity(box), processes }
        }))
      expect(first.status.startedFrom).toBe("boot")
      yield* standbyWarm(stateFile)

      const second = yield* withBox({ ...options, mounts: [{ host: shared, guest: "/mnt/shared" }] }, (box) =>
        Effect.gen(function*() {
          const status = yield* box.status
          const taken = Standby.stateOf(stateFile)
          const leftOver = yield* box.exec("ls /root; ls -A /tmp")
          const mounted = yield* box.exec("cat /mnt/shared/from-host.txt")
          // Equal once settled: whether a spare subshell waits at that moment varies.
          const processes = yield* settledProcessCount(box, first.processes)
          return { status, taken, identity: yield* identity(box), leftOver, mounted, processes }
        }))
      expect(second.status.startedFrom).toBe("standby")
      expect(second.taken).toBe("none")
      const [randomA, hostnameA] = first.identity
      const [randomB, hostnameB, clockB] = second.identity
      expect(randomB).toMatch(/^[0-9a-f]{32}$/)
      expect(randomB).not.toBe(randomA)
      expect(hostnameB).toMatch(/^v86box-[0-9a-f]{8}$/)
      expect(hostnameB).not.toBe(hostnameA)
      expect(Math.abs(Number(clockB) - Date.now() / 1000)).toBeLessThan(60)
      // The warm-up commands left nothing: no file, no process more than a fresh sandbox has.
      expect(second.leftOver.stdout).toBe("")
      expect(second.processes).toBe(first.processes)
      expect(second.mounted.stdout).toBe("served by this sandbox's file server\n")
      // Only sandboxes count: the standby made on release is not one (and is shut down here).
      expect(runningWorkerCount()).toBe(0)
      yield* Standby.clear
      expect(Standby.stateOf(stateFile)).toBe("none")
    }), 300_000)

  it.live("a standby made from an older state file is not used; with standby: false none is taken", () =>
    Effect.gen(function*() {
      const directory = mkdtempSync(join(tmpdir(), "v86box-standby-"))
      const stateFile = join(directory, "booted.v86state")
      yield* withBox({ standby: true, stateFile }, (box) => box.exec("true"))
      yield* standbyWarm(stateFile)
      const withoutOption = yield* withBox({ standby: false, stateFile }, (box) => box.status)
      expect(withoutOption.startedFrom).toBe("warmStart")
      expect(Standby.stateOf(stateFile)).toBe("warm")

      // Another state under the same name (here: the same bytes, written anew).
      copyFileSync(stateFile, `${stateFile}.copy`)
      renameSync(`${stateFile}.copy`, stateFile)
      const replaced = yield* withBox({ standby: true, stateFile }, (box) => Effect.zip(box.status, box.exec("echo resumed")))
      expect(replaced[0].startedFrom).toBe("warmStart")
      expect(replaced[1].stdout).toBe("resumed\n")
      yield* Standby.clear
    }), 300_000)

  it("a program that used a standby ends when its work is done", async () => {
    const directory = mkdtempSync(join(tmpdir(), "v86box-standby-"))
    const script = join(directory, "program.mts")
    const index = fileURLToPath(new URL("../src/index.ts", import.meta.url))
    // Two sandboxes: the first one's release makes a standby, the second takes it, and its
    // release makes another, which is still warming up when the program's work ends.
    writeFileSync(
      script,
      `import { V86Box } from ${JSON.stringify(index)}\n` +
        `const options = { standby: true, stateFile: ${JSON.stringify(join(directory, "booted.v86state"))} }\n` +
        `for (let run = 0; run < 2; run++) {\n` +
        `  const box = await V86Box.open(options)\n` +
        `  console.log((await box.exec("echo run " + run)).stdout.trim(), (await box.status()).startedFrom)\n` +
        `  await box.close()\n` +
        `  await new Promise((resolve) => setTimeout(resolve, 8000))\n` +
        `}\n` +
        `console.log("done", Date.now())\n`
    )
    const tsx = fileURLToPath(new URL("../node_modules/.bin/tsx", import.meta.url))
    const { stdout } = await promisify(execFile)(tsx, [script], { timeout: 100_000 })
    const ended = Date.now()
    const lines = stdout.trim().split("\n")
    expect(lines.slice(0, 2)).toEqual(["run 0 boot", "run 1 standby"])
    const doneAt = Number(lines[2]?.split(" ")[1])
    // The standby left warming up (seconds of work, kept for minutes) did not hold it.
    expect(ended - doneAt).toBeLessThan(3000)
  }, 120_000)
})
