/**
 * Changing V8's process-wide flags from several threads at once (src/internal/v8Flags.mjs):
 * emulator workers started together each expose `gc` for a moment; none may find it
 * hidden again by another (that crashed a pool's worker on start).
 */
import { Worker } from "node:worker_threads"
import { describe, expect, it } from "vitest"

const v8FlagsUrl = new URL("../src/internal/v8Flags.mjs", import.meta.url).href

/** A thread that asks for `gc` `rounds` times, as an emulator worker does once; replies how often it got it. */
const threadSource = `
const { parentPort, workerData } = require("node:worker_threads")
import(workerData.v8FlagsUrl).then(({ exposedGc }) => {
  const cells = new Int32Array(workerData.memory)
  Atomics.wait(cells, 1, 0, 2000) // start together
  let got = 0
  for (let round = 0; round < workerData.rounds; round++) if (typeof exposedGc(cells, 0) === "function") got++
  parentPort.postMessage(got)
})
`

const runThreads = async (threads: number, rounds: number): Promise<Array<number>> => {
  const memory = new SharedArrayBuffer(2 * 4)
  const workers = Array.from({ length: threads }, () =>
    new Worker(threadSource, { eval: true, workerData: { v8FlagsUrl, memory, rounds } }))
  try {
    const replies = workers.map((worker) =>
      new Promise<number>((resolve, reject) => {
        worker.once("message", resolve)
        worker.once("error", reject)
      }))
    // Let them all load, then release them at once.
    await new Promise((resolve) => setTimeout(resolve, 300))
    const cells = new Int32Array(memory)
    Atomics.store(cells, 1, 1)
    Atomics.notify(cells, 1)
    return await Promise.all(replies)
  } finally {
    await Promise.all(workers.map((worker) => worker.terminate()))
  }
}

describe("V8 flags changed by several threads", () => {
  it("every thread gets gc, however many ask at once", async () => {
    expect(await runThreads(4, 300)).toEqual([300, 300, 300, 300])
  })

  it("leaves gc hidden for contexts made afterwards", async () => {
    await runThreads(2, 1)
    const { runInNewContext } = await import("node:vm")
    expect(runInNewContext("typeof gc")).toBe(typeof globalThis.gc === "function" ? "function" : "undefined")
  })
})
