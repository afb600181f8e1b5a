/**
 * The process's guest-code compiler thread (guestCodeCompilerThread.mjs), started with the
 * first emulator that asks for it and shared by all: each emulator thread gets a port
 * to it. Why a thread of its own: src/internal/guestCode.mjs.
 */
import { MessageChannel, type MessagePort, Worker } from "node:worker_threads"

const threadUrl = new URL("./guestCodeCompilerThread.mjs", import.meta.url)
/** Modules compiled by this process's compiler threads, counted by the threads themselves. */
const compiled = new Int32Array(new SharedArrayBuffer(4))

let thread: Worker | undefined

const running = (): Worker => {
  if (thread !== undefined) return thread
  const started = new Worker(threadUrl, { workerData: { compiled } })
  // It never keeps the process alive, and one that failed is replaced by the next `connect`.
  started.unref()
  const forget = () => {
    if (thread === started) thread = undefined
  }
  started.on("error", forget)
  started.on("exit", forget)
  thread = started
  return started
}

/**
 * A port for one emulator thread (guestCode.mjs's `compileGuestCodeOffThread`), or none
 * when `V86BOX_GUEST_CODE=here` asks for compiling on the emulator thread (for comparison).
 */
export const connect = (): MessagePort | undefined => {
  if (process.env["V86BOX_GUEST_CODE"] === "here") return undefined
  const channel = new MessageChannel()
  running().postMessage({ port: channel.port1 }, [channel.port1])
  return channel.port2
}

/** Guest-code modules compiled off the emulator threads in this process so far (tests). */
export const compiledCount = (): number => Atomics.load(compiled, 0)

/** Test hook, not public API: ends the compiler thread as a crash would. */
export const stopForTesting = async (): Promise<void> => {
  await thread?.terminate()
}
