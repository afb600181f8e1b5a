/**
 * The process's guest-code compiler threads (guestCodeCompilerThread.mjs), started as
 * emulators ask for them and shared by all: each emulator thread gets a port to one.
 * Why threads of their own: src/internal/guestCode.mjs.
 */
import { availableParallelism } from "node:os"
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads"

const threadUrl = new URL("./guestCodeCompilerThread.mjs", import.meta.url)
/**
 * Memory the process's threads share: `compiled`, the modules the compiler threads
 * compiled; `lock`, the lock for changing V8's flags; `users`, the threads that need
 * V8's optimizing compiler now (v8Flags.mjs: compiler threads, and emulator threads
 * saving or loading compiled code).
 */
const shared = new Int32Array(new SharedArrayBuffer(3 * 4))
const cells = { compiled: 0, lock: 1, users: 2 } as const

/** What the emulator threads get to change V8's flags (v8Flags.mjs) with the compiler threads. */
export const v8Flags = { memory: shared.buffer, lock: cells.lock, users: cells.users } as const

/**
 * As many threads as cores, each serving the emulators given to it: the emulators of a
 * pool started together generate hundreds of modules (~70 ms of TurboFan per 100 KB),
 * and one thread took ~30 s to catch up on 7 (each emulator's modules differ: its own
 * entry points), while they ran their code interpreted.
 */
const threadCount = Math.max(1, availableParallelism())
const threads: Array<Worker | undefined> = []
let nextThread = 0

const running = (slot: number): Worker => {
  const existing = threads[slot]
  if (existing !== undefined) return existing
  const started = new Worker(threadUrl, { workerData: { shared, cells } })
  // It never keeps the process alive, and one that failed is replaced by the next `connect`.
  started.unref()
  const forget = () => {
    if (threads[slot] === started) threads[slot] = undefined
  }
  started.on("error", forget)
  started.on("exit", forget)
  threads[slot] = started
  return started
}

/**
 * A port for one emulator thread (guestCode.mjs's `compileGuestCodeOffThread`), to the
 * compiler threads in turn; or none when `V86BOX_GUEST_CODE=here` asks for compiling on
 * the emulator thread (for comparison).
 */
export const connect = (): MessagePort | undefined => {
  if (process.env["V86BOX_GUEST_CODE"] === "here") return undefined
  const channel = new MessageChannel()
  const slot = nextThread
  nextThread = (nextThread + 1) % threadCount
  running(slot).postMessage({ port: channel.port1 }, [channel.port1])
  return channel.port2
}

/** Guest-code modules compiled off the emulator threads in this process so far (tests). */
export const compiledCount = (): number => Atomics.load(shared, cells.compiled)

/** Test hook, not public API: ends the compiler threads as a crash would. */
export const stopForTesting = async (): Promise<void> => {
  await Promise.all(threads.map((thread) => thread?.terminate()))
}
