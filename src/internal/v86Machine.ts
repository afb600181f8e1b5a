/**
 * The live Machine: a v86 emulator in its own worker thread (src/internal/v86Worker.mjs).
 */
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import type * as Scope from "effect/Scope"
import { createRequire } from "node:module"
import { availableParallelism } from "node:os"
import { Worker } from "node:worker_threads"
import { MachineError } from "../Errors.ts"
import type { Firmware } from "../Options.ts"
import { ConsoleTail, fatalKernelMessage, type Machine } from "./machine.ts"
import * as GuestCodeCompiler from "./guestCodeCompiler.ts"
import { errorReply, tagOf } from "./ninePWire.ts"
import { AWAITED_FRAME_TYPES, FRAME_LAYOUT } from "./protocol.ts"
import type { RootDisk } from "../Assets.ts"

export interface V86MachineConfig {
  readonly wasm: WebAssembly.Module
  /** How a boot starts the kernel (see `V86BoxOptions.firmware`); the BIOS images are loaded only for `"seabios"`. */
  readonly firmware: Firmware
  readonly bios: Uint8Array
  readonly vgaBios: Uint8Array
  readonly kernel: Uint8Array
  readonly initrd: Uint8Array | undefined
  /** The root filesystem disk image, attached as the first IDE disk: read from its file as the guest asks. */
  readonly rootfs: RootDisk | undefined
  readonly cmdline: string
  readonly memoryMB: number
  /**
   * A state from `saveState`: the machine resumes from it instead of booting. The machine
   * takes it: an array that spans its whole buffer is moved to the worker (and is empty
   * afterwards), any other is copied.
   */
  readonly initialState?: Uint8Array | undefined
  /**
   * Answers the guest's 9P requests (its virtio-9p device, mount tag `host9p`): a request's
   * bytes in, the reply's bytes out. Without one, every request fails with EOPNOTSUPP.
   */
  readonly fileServer?: ((request: Uint8Array) => Promise<Uint8Array>) | undefined
  /** Sees every byte of the kernel log (the testkit records them). */
  readonly onKernelLog?: ((bytes: Uint8Array) => void) | undefined
  /**
   * Compiled guest code saved with `initialState` (the trained state, trainedState.ts):
   * a new emulator resumes the state with it, so the guest's code runs compiled from its
   * first command; if V8 will not load it, the state resumes without it. A recycled
   * emulator keeps its own code instead (see v86Worker.mjs).
   */
  readonly savedCode?: TrainedCode | undefined
  /** Told when a module of `savedCode` turned out damaged (the machine then fails). */
  readonly onSavedCodeDamaged?: (() => void) | undefined
  /**
   * Keeps what `saveStateAndCode` needs (a copy of each compiled module, ~9 MB): only for
   * a machine being trained. Such a machine is always a new emulator, whose code is all
   * recorded.
   */
  readonly recordCode?: boolean | undefined
  /**
   * A machine made ahead for a sandbox not yet asked for (src/internal/standby.ts): its
   * worker never keeps the process alive and is not counted as a sandbox's, until `adopt`.
   */
  readonly detached?: boolean | undefined
}

/**
 * An emulator's compiled guest code, saved by src/internal/compiledCode.mjs's `saveCode`:
 * v86's own memory (its non-zero pages) and each module in its function table, with
 * V8's machine code for it.
 */
export interface SavedCode {
  readonly engine: {
    readonly byteLength: number
    readonly guestStart: number
    readonly pages: Uint32Array
    readonly packed: Uint8Array
  }
  readonly modules: ReadonlyArray<{ readonly slot: number; readonly wire: Uint8Array; readonly code: Uint8Array }>
}

/**
 * Saved code to resume with, as trainedState.ts reads it: v86's memory in hand, the
 * modules left in the file at `path` (read by the worker as v86 first calls them).
 */
export interface TrainedCode {
  readonly path: string
  readonly engine: SavedCode["engine"]
  readonly modules: ReadonlyArray<{
    readonly slot: number
    readonly offset: number
    readonly wireBytes: number
    readonly codeBytes: number
    /** Of the module's bytes and machine code, as they lie in the file. */
    readonly sha256: string
  }>
}

const SavedCodeSchema = Schema.Struct({
  engine: Schema.Struct({
    byteLength: Schema.Number,
    guestStart: Schema.Number,
    pages: Schema.instanceOf(Uint32Array),
    packed: Schema.Uint8ArrayFromSelf
  }),
  modules: Schema.Array(Schema.Struct({ slot: Schema.Number, wire: Schema.Uint8ArrayFromSelf, code: Schema.Uint8ArrayFromSelf }))
})

/** A machine made with `detached`, and what makes it an ordinary sandbox's machine. */
export interface DetachedMachine {
  readonly machine: Machine
  readonly adopt: () => void
  /**
   * The machine's state and compiled code at one moment (made with `recordCode`); fails
   * with the reason if the code cannot be saved, and the machine runs on either way.
   */
  readonly saveStateAndCode: Effect.Effect<{ readonly state: Uint8Array; readonly code: SavedCode }, MachineError | string>
}

const stopGrace = Duration.seconds(2)

/**
 * What the worker may post (see v86Worker.mjs). Checked on arrival: the worker is plain
 * JavaScript, so this Schema is where its messages get their types.
 */
const WorkerMessage = Schema.Union(
  Schema.TaggedStruct("started", {}),
  Schema.TaggedStruct("agent", { bytes: Schema.Uint8ArrayFromSelf }),
  Schema.TaggedStruct("serial", { bytes: Schema.Uint8ArrayFromSelf }),
  Schema.TaggedStruct("saved", { id: Schema.Number, state: Schema.instanceOf(ArrayBuffer) }),
  Schema.TaggedStruct("code-saved", { id: Schema.Number, state: Schema.instanceOf(ArrayBuffer), code: SavedCodeSchema }),
  Schema.TaggedStruct("code-not-saved", { id: Schema.Number, message: Schema.String }),
  Schema.TaggedStruct("code-loaded", { modules: Schema.Number }),
  Schema.TaggedStruct("code-not-loaded", { reason: Schema.String }),
  Schema.TaggedStruct("code-damaged", {}),
  Schema.TaggedStruct("files", { id: Schema.Number, bytes: Schema.Uint8ArrayFromSelf }),
  Schema.TaggedStruct("failed", { message: Schema.String }),
  Schema.TaggedStruct("stopped", {})
)
const isWorkerMessage = Schema.is(WorkerMessage)

const workerUrl = new URL("./v86Worker.mjs", import.meta.url)
/**
 * Turns at the CPU for this process's emulators (cpuGate.mjs), shared by all its workers:
 * at most one emulator per core runs, in turns of 100 ms, once it has run 100 ms since the
 * guest last halted (a command's short burst runs at once: with 20 ms, an `exec("true")`
 * beside 4 busy sandboxes on 2 cores often outran it and queued, p90 ~200 ms; with 100,
 * p90 41-61 ms, where without turns it is ~80). `V86BOX_CPU_GATE=off` lets
 * the kernel's scheduler share the cores instead (for comparison; see docs/profiling.md).
 */
const cpuGate = process.env["V86BOX_CPU_GATE"] === "off"
  ? undefined
  : { memory: new SharedArrayBuffer(8), permits: availableParallelism(), turnMillis: 100, graceMillis: 100, stallMillis: 1000 }
/**
 * An emulator thread allocates little once its machine runs, but V8 gives each thread a
 * young generation of up to 32 MB, and an idle sandbox's garbage grows into it: 4 MB
 * took ~25 MB off each idle sandbox's RSS (4 sandboxes: ~125 instead of ~150 MB each).
 */
const workerHeap = { maxYoungGenerationSizeMb: 4 }
/** The agent's frame layout, so the worker knows which output the caller waits for. */
const agentFrames = { ...FRAME_LAYOUT, urgentTypes: AWAITED_FRAME_TYPES }
const workerOptions = {
  workerData: { cpuGate, agentFrames, v8Flags: GuestCodeCompiler.v8Flags },
  resourceLimits: workerHeap
}

/** Emulator workers started in this process and not yet exited (tests check for leaks). */
let runningWorkers = 0
export const runningWorkerCount = (): number => runningWorkers

const liveWorkers = new Set<Worker>()

/**
 * Test hook, not public API: makes every live emulator worker in this process crash, by
 * an uncaught exception (`"throw"`) or by ending its thread abruptly (`"exit"`), as a v86
 * bug or an out-of-memory abort would. Returns how many workers were told to.
 */
export const crashWorkersForTesting = (how: "throw" | "exit"): number => {
  for (const worker of liveWorkers) worker.postMessage({ type: "crash", how })
  return liveWorkers.size
}

/**
 * How resuming with saved code went in this process (tests and diagnostics): machines
 * that loaded it, and the reasons given when one could not.
 */
const codeLoads = { loaded: 0, refused: [] as Array<string> }
export const savedCodeLoads = (): { readonly loaded: number; readonly refused: ReadonlyArray<string> } => ({
  loaded: codeLoads.loaded,
  refused: [...codeLoads.refused]
})

/** The version of the installed v86, which runs every machine. */
export const v86Version: string = (createRequire(import.meta.url)("v86/package.json") as { version: string }).version

/**
 * Starts an emulator in a new worker; the scope's release destroys it and ends the
 * worker, however the scope ends.
 */
export const make = (config: V86MachineConfig): Effect.Effect<Machine, MachineError, Scope.Scope> =>
  Effect.map(makeDetachable(config), ({ machine }) => machine)

/** `make`, keeping the way to adopt a machine made with `detached`. */
export const makeDetachable = (config: V86MachineConfig): Effect.Effect<DetachedMachine, MachineError, Scope.Scope> =>
  // The images (root disk, saved state: tens of MB) are posted and forgotten: the
  // machine's closures live as long as it does and are made where `config` is not seen.
  Effect.map(start({ onKernelLog: config.onKernelLog, fileServer: config.fileServer, onSavedCodeDamaged: config.onSavedCodeDamaged }, {
    detached: config.detached === true,
    emulator: emulatorKey(config),
    // A machine being trained records all its code: a new emulator.
    resumes: config.initialState !== undefined && config.recordCode !== true
  }), ({ adopt, machine, reused, saveStateAndCode, worker }) => {
    const state = config.initialState === undefined ? undefined : ownedBuffer(config.initialState)
    // A recycled emulator keeps the port it was given.
    const compiler = reused ? undefined : GuestCodeCompiler.connect()
    worker.postMessage({
      type: "boot",
      config: {
        wasm: config.wasm,
        firmware: config.firmware,
        bios: config.firmware === "seabios" ? config.bios : undefined,
        vgaBios: config.firmware === "seabios" ? config.vgaBios : undefined,
        kernel: config.kernel,
        initrd: config.initrd,
        rootfs: config.rootfs === undefined ? undefined : { path: config.rootfs.path, byteLength: config.rootfs.byteLength },
        cmdline: config.cmdline,
        memoryMB: config.memoryMB,
        initialState: state,
        reuse: reused,
        compiler,
        code: { record: config.recordCode === true, saved: reused ? undefined : config.savedCode }
      }
    }, [
      ...(state === undefined ? [] : [state.buffer]),
      ...(compiler === undefined ? [] : [compiler]),
      ...(reused || config.savedCode === undefined ? [] : buffersOf(config.savedCode))
    ])
    return { machine, adopt, saveStateAndCode }
  })

/** The buffers under saved code, moved to the worker with it: it is read for one machine. */
const buffersOf = (code: TrainedCode): Array<ArrayBuffer> =>
  [...new Set<ArrayBufferLike>([code.engine.pages.buffer, code.engine.packed.buffer])]
    .filter((buffer): buffer is ArrayBuffer => buffer instanceof ArrayBuffer)

/**
 * The bytes in a buffer of their own, which can be moved to the worker instead of copied.
 * (`new Uint8Array(bytes)` copies; a Node Buffer's `slice` would not.)
 */
const ownedBuffer = (bytes: Uint8Array): Uint8Array<ArrayBuffer> =>
  bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength && bytes.buffer instanceof ArrayBuffer
    ? bytes as Uint8Array<ArrayBuffer>
    : new Uint8Array(bytes)

/**
 * What a recycled emulator must share with a machine to resume a state into it: the same
 * v86 build, RAM and devices (the same disk file; BIOS images are mapped at creation).
 */
const emulatorKey = (config: V86MachineConfig): string =>
  [
    wasmIdOf(config.wasm),
    config.memoryMB,
    config.rootfs === undefined ? "no disk" : `${config.rootfs.byteLength} ${config.rootfs.path}`,
    config.firmware === "seabios" ? `seabios ${config.bios.byteLength} ${config.vgaBios.byteLength}` : "direct"
  ].join(":")

const wasmIds = new WeakMap<WebAssembly.Module, number>()
let lastWasmId = 0
const wasmIdOf = (wasm: WebAssembly.Module): number => {
  const known = wasmIds.get(wasm)
  if (known !== undefined) return known
  wasmIds.set(wasm, ++lastWasmId)
  return lastWasmId
}

/** The worker and the machine over it, waiting for its "boot" message. */
const start = (
  hooks: Pick<V86MachineConfig, "onKernelLog" | "fileServer" | "onSavedCodeDamaged">,
  how: {
    readonly detached: boolean
    /** {@link emulatorKey} of the machine to start. */
    readonly emulator: string
    /** It resumes a saved state, so a recycled emulator with the same key can take it. */
    readonly resumes: boolean
  }
): Effect.Effect<DetachedMachine & { readonly worker: Worker; readonly reused: boolean }, MachineError, Scope.Scope> =>
  Effect.gen(function*() {
    const kernelLog = new ConsoleTail()
    const serialDecoder = new TextDecoder()
    const agentOutput = yield* Mailbox.make<Uint8Array, MachineError>()
    const started = yield* Deferred.make<void, MachineError>()
    const stopped = yield* Deferred.make<void>()
    /** Requests to the worker ("save", "save-code") waiting for their answer, by id. */
    const requests = new Map<number, Deferred.Deferred<unknown, unknown>>()
    let nextRequestId = 1
    let failure: MachineError | undefined
    /** Shut down healthy: its emulator may be recycled. */
    let recyclable = false

    const fail = (reason: string) => {
      if (failure !== undefined) return
      failure = new MachineError({ reason, consoleTail: kernelLog.tail(4096) })
      agentOutput.unsafeDone(Exit.fail(failure))
      Deferred.unsafeDone(started, Effect.fail(failure))
      for (const request of requests.values()) Deferred.unsafeDone(request, Effect.fail(failure))
      requests.clear()
    }

    const onSerial = (bytes: Uint8Array) => {
      hooks.onKernelLog?.(bytes)
      const text = serialDecoder.decode(bytes, { stream: true })
      kernelLog.append(text)
      // Look at the new text plus a little before it: a message may straddle two chunks.
      const fatal = fatalKernelMessage(kernelLog.tail(text.length + 64))
      if (fatal !== undefined) fail(fatal)
    }

    const { reused, worker } = yield* Effect.acquireRelease(
      Effect.try({
        try: () => takeWorker(how.resumes ? how.emulator : undefined),
        catch: (error) => new MachineError({ reason: `cannot start the emulator worker: ${String(error)}`, consoleTail: "" })
      }),
      ({ worker }) =>
        Effect.suspend(() => {
          if (!recyclable) return stopWorker(worker, stopped)
          worker.off("message", onMessage).off("error", onError).off("exit", onExit)
          if (adopted) runningWorkers--
          liveWorkers.delete(worker)
          recycle(worker, how.emulator)
          return Effect.void
        })
    )

    // A recycled worker may still deliver what its previous guest wrote: not this one's.
    let running = false
    const onMessage = (message: unknown) => {
      if (!isWorkerMessage(message)) return fail(`the emulator worker sent an unknown message: ${String(message)}`)
      if (!running && !["started", "failed", "code-loaded", "code-not-loaded", "code-damaged"].includes(message._tag)) return
      switch (message._tag) {
        case "started":
          running = true
          Deferred.unsafeDone(started, Effect.void)
          prepareSpareWorker()
          break
        case "agent":
          if (failure === undefined) agentOutput.unsafeOffer(message.bytes)
          break
        case "serial":
          onSerial(message.bytes)
          break
        case "saved":
          answer(message.id, Effect.succeed(new Uint8Array(message.state)))
          break
        case "code-saved":
          answer(message.id, Effect.succeed({ state: new Uint8Array(message.state), code: message.code }))
          break
        case "code-not-saved":
          answer(message.id, Effect.fail(message.message))
          break
        case "code-loaded":
          codeLoads.loaded++
          break
        case "code-not-loaded":
          codeLoads.refused.push(message.reason)
          break
        case "code-damaged":
          hooks.onSavedCodeDamaged?.()
          break
        case "files":
          answerFileRequest(message.id, message.bytes)
          break
        case "failed":
          fail(`the emulator failed: ${message.message}`)
          break
        case "stopped":
          Deferred.unsafeDone(stopped, Effect.void)
          break
      }
    }
    worker.on("message", onMessage)
    /** Asks the worker for `type`, answered by `answer` with the same id. */
    const ask = <A, E>(type: "save" | "save-code") =>
      Effect.gen(function*() {
        yield* alive
        const answered = yield* Deferred.make<A, E | MachineError>()
        const id = nextRequestId++
        // Kept untyped: `answer` completes it with what the worker's reply to `type` holds.
        requests.set(id, answered as unknown as Deferred.Deferred<unknown, unknown>)
        worker.postMessage({ type, id })
        return yield* Deferred.await(answered)
      })
    const answer = (id: number, result: Effect.Effect<unknown, unknown>) => {
      const request = requests.get(id)
      requests.delete(id)
      if (request !== undefined) Deferred.unsafeDone(request, result)
    }
    const answerFileRequest = (id: number, request: Uint8Array) => {
      const answer = hooks.fileServer?.(request) ?? Promise.resolve(errorReply(tagOf(request), "EOPNOTSUPP"))
      void answer.catch(() => errorReply(tagOf(request), "EIO")).then((reply) => {
        if (failure === undefined) worker.postMessage({ type: "files-reply", id, bytes: reply }, [reply.buffer as ArrayBuffer])
      })
    }
    const onError = (error: Error) => fail(`the emulator worker crashed: ${error.stack ?? error.message}`)
    worker.on("error", onError)
    let adopted = false
    const adopt = () => {
      if (adopted) return
      adopted = true
      worker.ref()
      runningWorkers++
      liveWorkers.add(worker)
    }
    if (how.detached) worker.unref()
    else adopt()
    const onExit = (code: number) => {
      if (adopted) runningWorkers--
      liveWorkers.delete(worker)
      Deferred.unsafeDone(stopped, Effect.void)
      fail(`the emulator worker exited (code ${code})`)
    }
    worker.on("exit", onExit)

    const alive = Effect.suspend(() => (failure === undefined ? Effect.void : Effect.fail(failure)))

    const machine: Machine = {
      receive: agentOutput.take.pipe(
        Effect.catchTag("NoSuchElementException", () =>
          Effect.fail(failure ?? new MachineError({ reason: "the machine stopped", consoleTail: kernelLog.tail(4096) })))
      ),
      send: (bytes) =>
        Deferred.await(started).pipe(
          Effect.zipRight(alive),
          Effect.zipRight(Effect.sync(() => worker.postMessage({ type: "input", bytes })))
        ),
      kernelLogTail: Effect.sync(() => kernelLog.tail()),
      saveState: ask<Uint8Array, never>("save")
    }
    const saveStateAndCode = ask<{ readonly state: Uint8Array; readonly code: SavedCode }, string>("save-code")
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        recyclable = failure === undefined && running
        fail("the machine was shut down")
      })
    )
    return { machine, worker, adopt, reused, saveStateAndCode }
  })

/**
 * A worker started ahead (thread up, v86 loaded, no machine yet) for the next sandbox:
 * starting a thread and loading v86 costs ~100 ms on a quiet machine, most of what a warm
 * start waits for before the emulator runs. It is made once a sandbox's emulator runs, so
 * it does not compete with that start, and it never keeps the process alive.
 */
let spare: { readonly worker: Worker; readonly forget: () => void } | undefined

const prepareSpareWorker = () => {
  if (spare !== undefined) return
  try {
    const worker = new Worker(workerUrl, workerOptions)
    worker.unref()
    // A spare that fails before it is used is forgotten; the next sandbox starts its own.
    const forget = () => {
      if (spare?.worker === worker) spare = undefined
    }
    worker.on("error", forget)
    worker.on("exit", forget)
    spare = { worker, forget }
  } catch {
    // No spare: the next sandbox starts its worker itself, as the first one did.
  }
}

/**
 * The emulator of the last sandbox released healthy, paused, kept for the next machine
 * that resumes a state with the same {@link emulatorKey}: the code v86 compiled in it
 * stays valid for every page the state does not change (see v86Worker.mjs), so that
 * sandbox runs at full speed from its first command. One per process, dropped after
 * `recycledLifetimeMillis` unused; never keeps the process alive.
 */
let recycled: { readonly worker: Worker; readonly key: string; readonly forget: () => void; readonly expiry: ReturnType<typeof setTimeout> } | undefined

/** Machines started on a recycled emulator in this process (tests check that it happens). */
let reusedEmulators = 0
export const reusedEmulatorCount = (): number => reusedEmulators

/** How long a recycled emulator (~100 MB) is kept unused. */
const recycledLifetimeMillis = 60_000

const recycle = (worker: Worker, key: string) => {
  dropRecycled()
  worker.postMessage({ type: "pause" })
  worker.unref()
  const forget = () => {
    if (recycled?.worker === worker) {
      clearTimeout(recycled.expiry)
      recycled = undefined
    }
  }
  worker.on("error", forget)
  worker.on("exit", forget)
  recycled = { worker, key, forget, expiry: setTimeout(dropRecycled, recycledLifetimeMillis).unref() }
}

/** Ends the recycled emulator's worker, if there is one. */
export const dropRecycled = (): void => {
  const dropped = recycled
  if (dropped === undefined) return
  dropped.forget()
  void dropped.worker.terminate()
}

/**
 * A worker for a new machine: the recycled emulator if `resumesWith` (the emulator key of a
 * machine that resumes a state) matches it, else the spare thread or a new one.
 */
const takeWorker = (resumesWith: string | undefined): { readonly worker: Worker; readonly reused: boolean } => {
  const reusable = recycled
  if (reusable !== undefined && reusable.key === resumesWith) {
    clearTimeout(reusable.expiry)
    recycled = undefined
    reusedEmulators++
    return { worker: claim(reusable), reused: true }
  }
  const taken = spare
  spare = undefined
  return { worker: taken === undefined ? new Worker(workerUrl, workerOptions) : claim(taken), reused: false }
}

/** A kept worker, made a sandbox's: no longer forgotten when it fails, and referenced. */
const claim = (kept: { readonly worker: Worker; readonly forget: () => void }): Worker => {
  kept.worker.off("error", kept.forget).off("exit", kept.forget)
  kept.worker.ref()
  return kept.worker
}

/** Asks the worker to destroy its emulator; terminates it if it does not finish in time. */
const stopWorker = (worker: Worker, stopped: Deferred.Deferred<void>) =>
  Effect.gen(function*() {
    yield* Effect.sync(() => worker.postMessage({ type: "stop" }))
    // Interruptible, or the timeout could not end the wait inside a release.
    const finished = yield* Deferred.await(stopped).pipe(Effect.interruptible, Effect.timeoutOption(stopGrace))
    yield* Effect.promise(() => worker.terminate())
    if (Option.isNone(finished)) yield* Effect.logWarning("v86box: the emulator did not stop in time; its worker was terminated")
  })
