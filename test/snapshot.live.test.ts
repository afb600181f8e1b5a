/**
 * Snapshots against live VMs: a running sandbox saved with `box.snapshot()`, forks started
 * from it with `fromSnapshot`. Forks share what was there and nothing after; each gets its
 * own randomness and name; a snapshot that cannot resume is an error, not a cold boot.
 */
import { describe, expect, it } from "@effect/vitest"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { type Snapshot, V86Box, type V86BoxOptions } from "../src/index.ts"

const withBox = <A, E>(options: V86BoxOptions, use: (box: V86Box.Service) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.flatMap(Layer.build(V86Box.layer(options)), (context) => use(Context.get(context, V86Box))))

/** What must differ between two forks: random bytes, a temporary file's name, the hostname. */
const identity = (box: V86Box.Service) =>
  Effect.map(
    box.exec("head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; mktemp; hostname"),
    (result) => result.stdout.trim().split("\n")
  )

const fork = (snapshot: Snapshot | string) =>
  withBox({ fromSnapshot: snapshot }, (box) =>
    Effect.gen(function*() {
      const inherited = yield* box.exec("cat /root/notes.txt")
      const [random, temporary, hostname] = yield* identity(box)
      yield* box.exec("echo mine > /root/own.txt")
      const own = yield* box.exec("cat /root/own.txt")
      const { startedFrom } = yield* box.status
      return { inherited: inherited.stdout, random, temporary, hostname, own: own.stdout, startedFrom }
    }))

const badSnapshot = (fromSnapshot: V86BoxOptions["fromSnapshot"]) =>
  Effect.flip(withBox({ fromSnapshot }, (box) => box.exec("true")))

describe("snapshots", () => {
  it.live("forks see the files written before the snapshot, not each other's, and differ in randomness and name", () =>
    Effect.gen(function*() {
      const directory = mkdtempSync(join(tmpdir(), "v86box-snapshot-"))
      const path = join(directory, "with-notes.v86state")
      const { inMemory, onDisk, parentAfter } = yield* withBox({}, (box) =>
        Effect.gen(function*() {
          yield* box.fs.writeFileString("/root/notes.txt", "written before the snapshot\n")
          const inMemory = yield* box.snapshot()
          const onDisk = yield* box.snapshot(path)
          // The sandbox goes on as before after a snapshot.
          yield* box.exec("echo after > /root/notes.txt")
          const parentAfter = yield* box.exec("cat /root/notes.txt")
          return { inMemory, onDisk, parentAfter: parentAfter.stdout }
        }))
      expect(parentAfter).toBe("after\n")
      expect(inMemory.path).toBeUndefined()
      expect(onDisk.path).toBe(path)
      expect(readFileSync(path).equals(onDisk.bytes)).toBe(true)

      const [first, second] = yield* Effect.all([fork(inMemory), fork(path)], { concurrency: 2 })
      for (const forked of [first, second]) {
        expect(forked.inherited).toBe("written before the snapshot\n")
        expect(forked.own).toBe("mine\n")
        expect(forked.random).toMatch(/^[0-9a-f]{32}$/)
        expect(forked.hostname).toMatch(/^v86box-[0-9a-f]{8}$/)
        expect(forked.startedFrom).toBe("snapshot")
      }
      expect(first.random).not.toBe(second.random)
      expect(first.temporary).not.toBe(second.temporary)
      expect(first.hostname).not.toBe(second.hostname)

      // A fork's writes stay in that fork: a new fork of the same snapshot has none of them
      // (and a snapshot in memory serves any number of forks).
      const fresh = yield* withBox({ fromSnapshot: inMemory }, (box) => box.exec("ls /root"))
      expect(fresh.stdout).toBe("notes.txt\n")

      // The same header over a broken machine state: the emulator cannot resume it.
      const broken = Buffer.from(onDisk.bytes)
      broken.fill(0x55, broken.indexOf(0x0a, 20) + 1)
      const error = yield* badSnapshot({ _tag: "Snapshot", bytes: broken, path: undefined })
      expect(error._tag).toBe("SnapshotError")
      expect(error.message).toContain("did not resume")
    }), 240_000)

  it.live("a snapshot is taken between commands", () =>
    withBox({}, (box) =>
      Effect.gen(function*() {
        const error = yield* Effect.scoped(
          Effect.flatMap(box.start("sleep 30"), () => Effect.flip(box.snapshot()))
        )
        expect(error._tag).toBe("SnapshotError")
        expect(error.message).toContain("still running")
        const empty = yield* Effect.flip(box.snapshot(""))
        expect(empty._tag).toBe("InvalidOptions")
      })), 120_000)

  it.live("a missing, corrupt or mismatched snapshot is a SnapshotError, never a cold boot", () =>
    Effect.gen(function*() {
      const directory = mkdtempSync(join(tmpdir(), "v86box-snapshot-"))
      const missing = yield* badSnapshot(join(directory, "nothing-here.v86state"))
      expect(missing).toMatchObject({ _tag: "SnapshotError", reason: "no such file" })

      const garbage = join(directory, "garbage.v86state")
      writeFileSync(garbage, "hello")
      expect(yield* badSnapshot(garbage)).toMatchObject({ _tag: "SnapshotError", reason: "not a v86box state file" })

      const header = (meta: object) => Buffer.from(`v86box-state 1\n${JSON.stringify(meta)}\nstate`)
      const warmState = yield* badSnapshot({ _tag: "Snapshot", bytes: header({ agent: "0.1.0" }), path: undefined })
      expect(warmState.message).toContain("warm-start state")

      const otherV86 = yield* badSnapshot({
        _tag: "Snapshot",
        bytes: header({ agent: "0.1.0", imageFingerprint: "x", memoryMB: 64, v86Version: "0.0.1", protocolVersion: 1 }),
        path: undefined
      })
      expect(otherV86.message).toContain("v86 0.0.1")

      const options = yield* Effect.flip(withBox({ fromSnapshot: 42 as never }, () => Effect.void))
      expect(options._tag).toBe("InvalidOptions")
    }), 60_000)

  it("the Promise API takes and forks snapshots", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "v86box-snapshot-")), "promise.v86state")
    const parent = await V86Box.open()
    try {
      await parent.exec("echo from the parent > /tmp/marker")
      expect((await parent.snapshot(path)).path).toBe(path)
    } finally {
      await parent.close()
    }
    await using forked = await V86Box.open({ fromSnapshot: path })
    expect((await forked.exec("cat /tmp/marker")).stdout).toBe("from the parent\n")
  }, 120_000)
})
