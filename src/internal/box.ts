/**
 * The V86Box service built over any Machine: the live layer gives it a v86 emulator, the
 * testkit a transcript. `start` and `exec` both run a command on an agent channel: `start`
 * queues its output for the Process's streams, `exec` gathers it as text.
 */
import * as Clock from "effect/Clock"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Mailbox from "effect/Mailbox"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import * as Sink from "effect/Sink"
import * as Stream from "effect/Stream"
import { createHash, randomBytes } from "node:crypto"
import * as Assets from "../Assets.ts"
import {
  type AssetError,
  BootTimeout,
  CommandTimeout,
  InvalidOptions,
  MachineError,
  OutputLimitExceeded,
  SnapshotError
} from "../Errors.ts"
import {
  decodeBoxOptions,
  decodeExecOptions,
  type DecodedBoxOptions,
  type DecodedExecOptions,
  type ExecOptions,
  type V86BoxOptions
} from "../Options.ts"
import { type ExecResult, type ExitStatus, type Process, signalName, signalNumbers } from "../Process.ts"
import type { Snapshot, SnapshotSource } from "../Snapshot.ts"
import type { StartedFrom, Status, V86Box } from "../V86Box.ts"
import {
  AgentClient,
  type Channel,
  type ChannelExit,
  type ChannelOutput,
  type ChannelRequest,
  QueuedOutput,
  TextOutput
} from "./agentClient.ts"
import * as guestFileSystem from "./guestFileSystem.ts"
import * as HostShares from "./hostShares.ts"
import type { Machine } from "./machine.ts"
import * as Standby from "./standby.ts"
import * as StateFile from "./stateFile.ts"
import * as TrainedState from "./trainedState.ts"
import * as V86Machine from "./v86Machine.ts"
import * as WarmStart from "./warmStart.ts"

/** How long closing a command's scope waits for the guest to confirm it is gone. */
const killGrace = Duration.seconds(5)

/** How the testkit looks inside a live boot: it records the machine and what produced it. */
export interface BootHooks {
  readonly onAssets?: ((assets: Assets.ResolvedAssets, memoryMB: number) => void) | undefined
  readonly onKernelLog?: ((bytes: Uint8Array) => void) | undefined
  readonly wrapMachine?: ((machine: Machine) => Machine) | undefined
  readonly guestInit?: GuestInit | undefined
}

/**
 * Starts a live sandbox: assets → emulator in a worker → a ready agent. With warm start
 * (the default) it resumes a saved booted state when there is one, and saves one after a
 * cold boot; a state that will not resume is logged, removed and replaced.
 */
export const make = (
  options: V86BoxOptions | undefined,
  hooks: BootHooks = {}
): Effect.Effect<V86Box.Service, BootTimeout | AssetError | MachineError | InvalidOptions | SnapshotError, Scope.Scope> =>
  Effect.gen(function*() {
    const decoded = yield* decodeBoxOptions(options)
    const startedAt = yield* Clock.currentTimeMillis
    const shares = yield* HostShares.make(decoded.mounts)
    let machine: Machine | undefined
    const booting = Effect.gen(function*() {
      // Training runs only while no sandbox does (standby.ts).
      yield* Standby.stopTraining()
      const assets = yield* Assets.resolveNode({
        assets: decoded.assets,
        assetsDir: decoded.assetsDir,
        onProgress: decoded.onProgress
      })
      if (decoded.fromSnapshot !== undefined && hooks.wrapMachine !== undefined) {
        return yield* Effect.fail(new InvalidOptions({ issues: ["fromSnapshot: a recording boots cold; a fork cannot be recorded"] }))
      }
      const snapshot = decoded.fromSnapshot === undefined
        ? undefined
        : yield* loadSnapshot(decoded.fromSnapshot, assets.fingerprint, decoded.memoryMB)
      const memoryMB = snapshot?.origin.memoryMB ?? decoded.memoryMB ?? assets.memoryMB
      if (memoryMB < assets.memoryMB) {
        return yield* Effect.fail(
          new InvalidOptions({ issues: [`memoryMB: this image needs at least ${assets.memoryMB} MiB, got ${memoryMB}`] })
        )
      }
      hooks.onAssets?.(assets, memoryMB)
      const config: V86Machine.V86MachineConfig = {
        wasm: yield* compileWasm(assets.wasm),
        firmware: decoded.firmware,
        bios: assets.bios,
        vgaBios: assets.vgaBios,
        kernel: assets.kernel,
        initrd: assets.initrd,
        rootfs: assets.rootfs,
        cmdline: assets.cmdline,
        memoryMB,
        fileServer: shares.handle,
        onKernelLog: hooks.onKernelLog
      }
      // The testkit's recorded settings; otherwise fresh ones when INIT goes out (`serve`).
      const guestInit = hooks.guestInit
      const origin = StateFile.currentOrigin(assets.fingerprint, memoryMB)
      if (snapshot !== undefined) {
        return yield* resumeFrom(config, snapshot.saved, decoded, startedAt, guestInit, origin, "snapshot").pipe(
          Effect.mapError((error) =>
            new SnapshotError({ reason: `the machine did not resume from it: ${error.message}`, path: snapshot.path })
          )
        )
      }
      // A recording must show the whole boot, so the testkit always boots cold.
      const statePath = decoded.warmStart && hooks.wrapMachine === undefined
        ? decoded.stateFile ?? WarmStart.defaultStatePath({ imageFingerprint: assets.fingerprint, memoryMB, firmware: decoded.firmware }, decoded.assetsDir)
        : undefined

      if (statePath !== undefined && decoded.standby) {
        const key: Standby.StandbyKey = {
          statePath,
          sourcePaths: [statePath, TrainedState.pathFor(statePath)],
          imageFingerprint: assets.fingerprint,
          memoryMB
        }
        // On release, after this sandbox's machine is gone (finalizers run last-added first).
        yield* Effect.addFinalizer(() => Standby.prepare(standbyRecipe(key, config, decoded, origin)))
        const taken = yield* Standby.take(key, config.fileServer)
        if (Option.isSome(taken)) {
          return yield* serveResumed(taken.value.client, decoded, startedAt, guestInit, taken.value.agent, origin, "standby")
        }
      }
      if (statePath !== undefined) {
        const resumed = yield* resume(config, statePath, decoded, startedAt, guestInit, origin)
        if (Option.isSome(resumed)) return resumed.value
      }
      const live = yield* V86Machine.make(config)
      machine = hooks.wrapMachine?.(live) ?? live
      const client = yield* AgentClient.make(machine)
      const agent = yield* client.ready
      if (statePath !== undefined) {
        // Load the common programs into the guest's page cache first: a resumed sandbox
        // then answers its first command without reading them from the root disk.
        yield* makeService(client, decoded, { agentVersion: agent.agent, bootMillis: 0, startedFrom: "boot" }, snapshotOf(client, agent.agent, undefined))
          .exec(warmUpCommand).pipe(Effect.ignore)
        // Saved before INIT: every sandbox resumed from it gets its own time and entropy.
        yield* saveState(live, statePath, decoded.stateFile === undefined, agent.agent, origin)
      }
      return yield* serve(client, decoded, startedAt, guestInit, agent.agent, origin, "boot")
    })
    return yield* booting.pipe(
      // A recording carries console bytes only: its files go through the console, as on replay.
      Effect.flatMap((service) => withHostShares(service, decoded.mounts, hooks.wrapMachine === undefined ? shares : undefined)),
      Effect.timeoutFail({
        duration: decoded.bootTimeout,
        onTimeout: () => new BootTimeout({ timeoutMillis: Duration.toMillis(decoded.bootTimeout), kernelLogTail: "" })
      }),
      // The kernel log is read after the timeout fired, while the machine still exists.
      Effect.catchTag("BootTimeout", (error) =>
        Effect.flatMap(machine?.kernelLogTail ?? Effect.succeed("(the emulator had not started)"), (kernelLogTail) =>
          Effect.fail(new BootTimeout({ timeoutMillis: error.timeoutMillis, kernelLogTail }))))
    )
  })

/** Touches what most commands use: bash, the C library, coreutils and friends. */
const warmUpCommand =
  "ls / >/dev/null; cat /dev/null; grep -q x /dev/null; sed -n p /dev/null; awk 1 /dev/null; " +
  "head -c1 /dev/zero >/dev/null; env >/dev/null; date >/dev/null; true"

/**
 * A resumed agent must answer INIT this fast, or the state is treated as broken: half of
 * `bootTimeout`, which leaves the other half to the cold boot a warm start falls back to
 * (a fixed 10 s made busy machines give up on good states and boot cold).
 */
const resumeTimeout = (options: DecodedBoxOptions) => Duration.times(options.bootTimeout, 0.5)

/**
 * Resumes the saved state at `path`, if there is one that works: its trained state
 * (trainedState.ts) first, if there is one. Each attempt runs in its own scope so a
 * failed one leaves no emulator behind.
 */
const resume = (
  config: V86Machine.V86MachineConfig,
  path: string,
  options: DecodedBoxOptions,
  startedAt: number,
  guestInit: GuestInit | undefined,
  origin: StateFile.StateOrigin
): Effect.Effect<Option.Option<V86Box.Service>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const attempt = (resumed: Effect.Effect<V86Box.Service, MachineError, Scope.Scope>) =>
      Effect.gen(function*() {
        const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
        const exit = yield* Effect.exit(resumed.pipe(Scope.extend(scope)))
        if (Exit.isFailure(exit)) yield* Scope.close(scope, exit)
        return exit
      })
    const trainedPath = TrainedState.pathFor(path)
    const trained = yield* TrainedState.readOption(trainedPath, origin)
    if (Option.isSome(trained)) {
      const { agent, code, state } = trained.value
      const resumed = yield* attempt(
        resumeFrom(
          { ...config, savedCode: code, onSavedCodeDamaged: removeDamaged(trainedPath) },
          { agent, origin, state },
          options,
          startedAt,
          guestInit,
          origin,
          "warmStart"
        )
      )
      if (Exit.isSuccess(resumed)) return Option.some(resumed.value)
      yield* Effect.logWarning(`v86box: the trained state ${trainedPath} did not resume; removing it`, resumed.cause)
      yield* TrainedState.remove(trainedPath)
    }
    const saved = yield* WarmStart.read(path)
    if (Option.isNone(saved)) return Option.none()
    const resumed = yield* attempt(resumeFrom(config, saved.value, options, startedAt, guestInit, origin, "warmStart"))
    if (Exit.isSuccess(resumed)) return Option.some(resumed.value)
    yield* Effect.logWarning(`v86box: the saved state ${path} did not resume; booting cold and saving a new one`, resumed.cause)
    yield* WarmStart.remove(path)
    return Option.none()
  })

/** A trained state found damaged goes: training makes a new one. */
const removeDamaged = (path: string) => () => {
  Effect.runFork(
    Effect.zipRight(Effect.logWarning(`v86box: the trained state ${path} is damaged; removing it`), TrainedState.remove(path))
  )
}

/**
 * How the standby for `key` is made: the trained state (or, until there is one, the
 * warm-start state) resumed in a detached machine (in the emulator the released sandbox
 * left, when it fits: its compiled code is kept), then commands until `exec("true")` runs
 * at full speed (v86 compiles a guest page's code only once it has run often: in a new
 * emulator the fork, exec and exit paths of a command need ~30 runs; in a recycled one,
 * a few). And how the trained state is made while there is none (standby.ts runs it when
 * the process is idle): the warm-start state resumed in a new emulator that records its
 * code, `trainingCommands` commands, then its state and code saved.
 */
const standbyRecipe = (
  key: Standby.StandbyKey,
  config: V86Machine.V86MachineConfig,
  options: DecodedBoxOptions,
  origin: StateFile.StateOrigin
): Standby.StandbyRecipe => ({
  key,
  resume: (files) =>
    Effect.gen(function*() {
      const trainedPath = TrainedState.pathFor(key.statePath)
      const trained = yield* TrainedState.readOption(trainedPath, origin)
      const saved = Option.isSome(trained)
        ? Option.some({ agent: trained.value.agent, state: trained.value.state })
        : yield* WarmStart.read(key.statePath)
      if (Option.isNone(saved)) {
        return yield* Effect.fail(new MachineError({ reason: "the warm-start state is gone", consoleTail: "" }))
      }
      const { adopt, machine } = yield* V86Machine.makeDetachable({
        ...config,
        fileServer: files,
        initialState: saved.value.state,
        savedCode: Option.isSome(trained) ? trained.value.code : undefined,
        onSavedCodeDamaged: removeDamaged(trainedPath),
        detached: true
      })
      const client = yield* AgentClient.make(machine, { resumed: true })
      return { client, agent: saved.value.agent, adopt }
    }),
  warmUp: ({ client }, stopped) =>
    Effect.gen(function*() {
      const service = unattendedService(client, options)
      // Timed in blocks of `true`s: the warm-up ends once a block's median is not
      // `warmUpGain` faster than the median `warmUpSpan` blocks before it (v86 has
      // compiled the command path; commands keep getting faster for hundreds of commands
      // in a new emulator, docs/profiling.md), or after `warmUpMaxCommands`.
      yield* warmUpCommands(service, stopped, 0, warmUpMaxCommands)
    }),
  train: (stopped) =>
    Effect.gen(function*() {
      // Idle means no sandbox at all: one built with `standby: false` takes no standby.
      if (V86Machine.runningWorkerCount() > 0) return
      const trainedPath = TrainedState.pathFor(key.statePath)
      if (yield* TrainedState.exists(trainedPath, origin)) return
      const saved = yield* WarmStart.read(key.statePath)
      if (Option.isNone(saved)) return
      // A new emulator that records all the code v86 compiles in it.
      const { machine, saveStateAndCode } = yield* V86Machine.makeDetachable({
        ...config,
        fileServer: undefined,
        initialState: saved.value.state,
        recordCode: true,
        detached: true
      })
      const client = yield* AgentClient.make(machine, { resumed: true })
      const service = unattendedService(client, options)
      yield* warmUpCommands(service, stopped, trainingCommands, trainingCommands)
      if (stopped()) return
      const { code, state } = yield* saveStateAndCode
      if (stopped()) return
      yield* TrainedState.write(trainedPath, { agent: saved.value.agent, origin, state, code })
    }).pipe(Effect.tapError((error) => Effect.logDebug(`v86box: no trained state saved: ${String(error)}`)))
})

/**
 * The commands of a machine no sandbox has yet (the standby warming up, the trainer):
 * no command timeout, since an Effect timer would keep the process alive; never snapshotted.
 */
const unattendedService = (client: AgentClient, options: DecodedBoxOptions) =>
  makeService(client, { ...options, commandTimeout: undefined }, { agentVersion: "", bootMillis: 0, startedFrom: "standby" }, () =>
    Effect.die("an unattended machine is not snapshotted"))

/**
 * Runs `true`s (and, one in `warmUpToolEvery` of the first commands, `warmUpCommand`'s
 * tools, for their paths), timed in blocks of `warmUpBlock`: from `atLeast` commands on,
 * stops once a block's median is not `warmUpGain` faster than the median `warmUpSpan`
 * blocks before it, and after `atMost` or once `stopped()`.
 */
const warmUpCommands = (service: V86Box.Service, stopped: () => boolean, atLeast: number, atMost: number) =>
  Effect.gen(function*() {
    const blockMedians: Array<number> = []
    let block: Array<number> = []
    // Short commands: a sandbox taking the standby waits for the one in progress.
    for (let step = 0; step < atMost && !stopped(); step++) {
      if (step < warmUpToolRuns * warmUpToolEvery && step % warmUpToolEvery === warmUpToolEvery - 1) {
        yield* service.exec(warmUpCommand)
        continue
      }
      const startedAt = performance.now()
      yield* service.exec("true")
      block.push(performance.now() - startedAt)
      if (block.length < warmUpBlock) continue
      blockMedians.push(block.sort((a, b) => a - b)[Math.floor(warmUpBlock / 2)]!)
      block = []
      const earlier = blockMedians[blockMedians.length - 1 - warmUpSpan]
      if (step >= atLeast && earlier !== undefined && blockMedians[blockMedians.length - 1]! > earlier * (1 - warmUpGain)) return
    }
  })

/**
 * Commands the trainer runs: enough for v86 to compile the paths of `true` and of the
 * tools (~20 s in a new emulator, once per image, Node and CPU). After
 * 600, 105-111 modules, and the bench's sandbox ran `exec("true")` at p50 ~0.7 ms above
 * its speed after 1000 commands; after 1500, 141-144 modules and ~0.2 ms above it
 * (docs/profiling.md).
 */
const trainingCommands = 1500

/**
 * The standby's warm-up: at most this many commands (~4 s of emulation in a new emulator
 * on a quiet machine; in one whose code is compiled it stops after ~65).
 */
const warmUpMaxCommands = 480
/** How many of the first commands are `warmUpCommand`'s tools, one in `warmUpToolEvery`, for their paths. */
const warmUpToolRuns = 6
const warmUpToolEvery = 8
/** `true`s per timed block, blocks compared, and the speed-up that keeps the warm-up going. */
const warmUpBlock = 20
const warmUpSpan = 2
const warmUpGain = 0.1

/**
 * A machine resumed from a saved state (warm start or a snapshot): no READY comes, the
 * answer to INIT (fresh time, entropy, hostname) proves the agent is there.
 */
const resumeFrom = (
  config: V86Machine.V86MachineConfig,
  saved: StateFile.SavedState,
  options: DecodedBoxOptions,
  startedAt: number,
  guestInit: GuestInit | undefined,
  origin: StateFile.StateOrigin,
  startedFrom: "warmStart" | "snapshot"
): Effect.Effect<V86Box.Service, MachineError, Scope.Scope> =>
  Effect.gen(function*() {
    const machine = yield* V86Machine.make({ ...config, initialState: saved.state })
    const client = yield* AgentClient.make(machine, { resumed: true })
    return yield* serveResumed(client, options, startedAt, guestInit, saved.agent, origin, startedFrom)
  })

/** `serve` for a machine resumed from a state (no READY comes), bounded by `resumeTimeout`. */
const serveResumed = (
  client: AgentClient,
  options: DecodedBoxOptions,
  startedAt: number,
  guestInit: GuestInit | undefined,
  agentVersion: string,
  origin: StateFile.StateOrigin,
  startedFrom: "warmStart" | "snapshot" | "standby"
) =>
  serve(client, options, startedAt, guestInit, agentVersion, origin, startedFrom).pipe(
    Effect.timeoutFail({
      duration: resumeTimeout(options),
      onTimeout: () =>
        new MachineError({
          reason: `the ${startedFrom === "standby" ? "standby sandbox's" : "resumed"} agent did not answer`,
          consoleTail: ""
        })
    })
  )

/**
 * The snapshot `fromSnapshot` names, checked against the image and RAM it must run with:
 * a snapshot that cannot resume is an error here, before any emulator starts.
 */
const loadSnapshot = (source: SnapshotSource, imageFingerprint: string, memoryMB: number | undefined) =>
  Effect.gen(function*() {
    const path = typeof source === "string" ? source : source.path
    const saved = yield* (typeof source === "string" ? StateFile.read(source) : StateFile.decode(source.bytes)).pipe(
      Effect.mapError((reason) => new SnapshotError({ reason, path }))
    )
    const origin = saved.origin
    if (origin === undefined) {
      return yield* Effect.fail(new SnapshotError({ reason: "it is a warm-start state, not a snapshot", path }))
    }
    const problem = StateFile.mismatch(origin, StateFile.currentOrigin(imageFingerprint, memoryMB ?? origin.memoryMB))
    if (problem !== undefined) return yield* Effect.fail(new SnapshotError({ reason: problem, path }))
    return { saved, origin, path }
  })

/**
 * `box.snapshot`: the machine's state as a state file's bytes, written atomically to
 * `path` if given. Taken between commands: a fork must not inherit half a conversation.
 */
const snapshotOf = (client: AgentClient, agent: string, origin: StateFile.StateOrigin | undefined) =>
(path?: string): Effect.Effect<Snapshot, SnapshotError | MachineError | InvalidOptions> =>
  Effect.gen(function*() {
    if (path !== undefined && (typeof path !== "string" || path.length === 0)) {
      return yield* Effect.fail(new InvalidOptions({ issues: ["path: must be a non-empty string"] }))
    }
    if (origin === undefined) return yield* Effect.fail(new SnapshotError({ reason: "a replayed sandbox has no machine to save", path }))
    if (client.pending > 0) {
      return yield* Effect.fail(
        new SnapshotError({ reason: `${client.pending} command(s) still running; a snapshot is taken between commands`, path })
      )
    }
    const state = yield* client.machine.saveState
    const bytes = StateFile.encode({ agent, origin, state })
    if (path !== undefined) {
      yield* StateFile.write(path, bytes).pipe(
        Effect.mapError((error) => new SnapshotError({ reason: `cannot write it: ${error.message}`, path }))
      )
    }
    return { _tag: "Snapshot", bytes, path } as const
  })

const saveState = (machine: Machine, path: string, inStatesDir: boolean, agent: string, origin: StateFile.StateOrigin) =>
  machine.saveState.pipe(
    Effect.flatMap((state) => WarmStart.write(path, { agent, origin, state }, inStatesDir)),
    Effect.catchAll((error) => Effect.logWarning(`v86box: could not save the booted state to ${path}: ${error.message}`))
  )

/**
 * Sets the guest's clock and entropy, then serves commands. Without `guestInit` (the
 * testkit's, recorded) they are made here, as INIT goes out: made when the layer started
 * building, the time was as old as the boot or resume.
 */
const serve = (
  client: AgentClient,
  options: DecodedBoxOptions,
  startedAt: number,
  guestInit: GuestInit | undefined,
  agentVersion: string,
  origin: StateFile.StateOrigin | undefined,
  startedFrom: StartedFrom
) =>
  Effect.gen(function*() {
    const settings = guestInit ?? (yield* freshGuestInit)
    yield* client.init(settings)
    // A resumed guest can take INIT in hundreds of ms after it was sent (its emulator has
    // compiled nothing yet), and its clock is set to the time of sending: measured ~0.6 s
    // behind the host's in a new emulator. Once the agent has answered, it takes the time
    // again at once: ahead of any command (the agent reads frames in order), so the
    // sandbox does not wait for that answer too. Not with the testkit's settings: a
    // replay sends what was recorded.
    if (guestInit === undefined && Date.now() - settings.timeMillis > clockResendMillis) {
      yield* client.sendInit({ timeMillis: Date.now() })
    }
    const bootMillis = (yield* Clock.currentTimeMillis) - startedAt
    return makeService(client, options, { agentVersion, bootMillis, startedFrom }, snapshotOf(client, agentVersion, origin))
  })

/** How late an answer to INIT may come before the guest's clock is set once more. */
const clockResendMillis = 20

/**
 * What the host tells a fresh guest: the time, new entropy and its own hostname, so
 * guests booted, resumed or forked alike never share random numbers or names. The
 * testkit records and replays these (older transcripts have no hostname).
 */
export interface GuestInit {
  readonly timeMillis: number
  readonly entropyHex: string
  readonly hostname?: string
}

/** Wall-clock time on purpose, not Effect's Clock: under a TestClock the guest would live in 1970. */
export const freshGuestInit: Effect.Effect<GuestInit> = Effect.sync(() => ({
  timeMillis: Date.now(),
  entropyHex: randomBytes(32).toString("hex"),
  hostname: `v86box-${randomBytes(4).toString("hex")}`
}))

/**
 * The service over a machine whose guest is booting or restored: waits for the agent's
 * ready frame, sets the guest clock and entropy, and serves commands.
 */
export const connect = (
  machine: Machine,
  options: DecodedBoxOptions,
  startedAt: number,
  guestInit: GuestInit
): Effect.Effect<V86Box.Service, MachineError, Scope.Scope> =>
  Effect.gen(function*() {
    const client = yield* AgentClient.make(machine)
    const agent = yield* client.ready
    const service = yield* serve(client, options, startedAt, guestInit, agent.agent, undefined, "boot")
    return yield* withHostShares(service, options.mounts, undefined)
  })

/**
 * Files from this size up go into a live guest through the staging share (9p), not the
 * console. Measured: 9p was as fast at 4 KiB and faster from 64 KiB on (7× at 4 MiB);
 * below the console's 64 KiB stdin window a write is one round trip and needs no host file.
 */
const bulkWriteMinimumBytes = 64 * 1024

/**
 * Mounts the user's host directories in the guest (after any resume, so no saved state
 * holds a mount), and with `shares` (a live machine) gives the service's filesystems the
 * staging share for large files.
 */
const withHostShares = (
  service: V86Box.Service,
  mounts: DecodedBoxOptions["mounts"],
  shares: HostShares.HostShares | undefined
): Effect.Effect<V86Box.Service, MachineError> =>
  Effect.gen(function*() {
    const guest = HostShares.guestSide(service.exec)
    yield* guest.mountDirectories(mounts)
    if (shares === undefined) return service
    const bulkWrites: guestFileSystem.BulkWrites = { minimumBytes: bulkWriteMinimumBytes, stage: guest.stage(shares) }
    const withBulkWrites = { ...service, [guestFileSystem.bulkWritesKey]: bulkWrites }
    return { ...withBulkWrites, fs: guestFileSystem.make(withBulkWrites) }
  })

const makeService = (
  client: AgentClient,
  defaults: DecodedBoxOptions,
  info: { readonly agentVersion: string; readonly bootMillis: number; readonly startedFrom: StartedFrom },
  snapshot: V86Box.Service["snapshot"]
): V86Box.Service => {
  const start = (command: string, options?: ExecOptions) =>
    Effect.flatMap(decodeExecOptions(command, options), (decoded) =>
      startProcess(client, command, {
        ...decoded,
        timeout: decoded.timeout ?? defaults.commandTimeout
      }))

  const exec = (command: string, options?: ExecOptions) =>
    Effect.flatMap(decodeExecOptions(command, options), (decoded) => {
      if (decoded.stdin === "pipe") {
        return Effect.fail(
          new InvalidOptions({ issues: ['stdin: "pipe" is for start(); give exec the input itself (text, bytes or a Stream)'] })
        )
      }
      return runToExit(client, command, {
        ...decoded,
        timeout: decoded.timeout ?? defaults.commandTimeout,
        maxOutputBytes: decoded.maxOutputBytes ?? defaults.maxOutputBytes
      })
    })

  const status = Effect.sync((): Status => ({
    ready: client.isAlive,
    pending: client.pending,
    agentVersion: info.agentVersion,
    bootMillis: info.bootMillis,
    startedFrom: info.startedFrom
  }))
  return { exec, start, status, snapshot, fs: guestFileSystem.make({ exec, start }) }
}

/**
 * A command started on its own channel, ended with the scope (killed if still running),
 * with its timeout and stdin feeder running, and how it ended as `exit`.
 */
const openChannel = (
  client: AgentClient,
  command: string,
  options: DecodedExecOptions,
  output: ChannelOutput
): Effect.Effect<{ readonly channel: Channel; readonly exit: Process["exit"] }, MachineError | InvalidOptions, Scope.Scope> =>
  Effect.gen(function*() {
    const channel = yield* Effect.acquireRelease(client.open(channelRequest(command, options), output), endChannel)
    channel.outputLimit = options.maxOutputBytes
    if (options.timeout !== undefined && Duration.isFinite(options.timeout)) {
      yield* Effect.forkScoped(Effect.zipRight(Effect.sleep(options.timeout), Effect.ignore(channel.terminate("timeout"))))
    }
    if (options.stdin !== undefined && options.stdin !== "pipe") {
      yield* Effect.forkScoped(feedStdin(channel, options.stdin))
    }
    const exit = Effect.flatMap(channel.exit, (ended) => outcome(command, options, channel, ended, noText))
    return { channel, exit }
  })

/**
 * How a command ended, for its caller: its exit status, or the error the client's
 * killing it gives (carrying `text`, its output so far, where it was gathered).
 */
const outcome = (
  command: string,
  options: DecodedExecOptions,
  channel: Channel,
  ended: ChannelExit,
  text: { readonly stdout: string; readonly stderr: string }
): Effect.Effect<ExitStatus, CommandTimeout | OutputLimitExceeded> => {
  switch (channel.termination) {
    case "timeout":
      return Effect.fail(
        new CommandTimeout({ command, timeoutMillis: Duration.toMillis(options.timeout ?? Duration.zero), ...text })
      )
    case "outputLimit":
      return Effect.fail(new OutputLimitExceeded({ command, maxOutputBytes: channel.outputLimit ?? 0, ...text }))
    default:
      return Effect.succeed(exitStatus(ended))
  }
}

const noText = { stdout: "", stderr: "" }

const channelRequest = (command: string, options: DecodedExecOptions): ChannelRequest => ({
  command,
  cwd: options.cwd,
  uid: options.uid,
  env: options.env,
  stdin: options.stdin === undefined ? "null" : "pipe"
})

const exitStatus = (ended: ChannelExit): ExitStatus =>
  ended.signal === 0 ? { exitCode: ended.code } : { exitCode: ended.code, signal: signalName(ended.signal) }

/**
 * exec's path: the command runs on a channel that gathers its output as text, and exec
 * waits for its exit; no scope, and no fiber unless it has a timeout or stdin to feed.
 * Interrupted, it kills the command as `start`'s scope would. (The same results as
 * `start` and reading both streams, for about half the host's time per command: the
 * testkit's replay, ~190 -> ~100 µs per `exec("true")`; docs/profiling.md.)
 */
const runToExit = (
  client: AgentClient,
  command: string,
  options: DecodedExecOptions
): Effect.Effect<ExecResult, CommandTimeout | OutputLimitExceeded | MachineError | InvalidOptions> =>
  Effect.uninterruptibleMask((restore) => {
    // Made as the effect runs: the same exec effect run again gathers its own output.
    const output = new TextOutput()
    return Effect.flatMap(client.open(channelRequest(command, options), output), (channel) => {
      channel.outputLimit = options.maxOutputBytes
      return restore(awaitExit(channel, options)).pipe(
        Effect.onInterrupt(() => endChannel(channel)),
        Effect.flatMap((ended) => {
          const text = output.collected()
          return Effect.map(outcome(command, options, channel, ended, text), (status): ExecResult => ({
            ...status,
            stdout: text.stdout,
            stderr: text.stderr + startErrorLine(ended)
          }))
        })
      )
    })
  })

/** The channel's exit, once its stdin (if any) is fed; past the timeout the command is killed first. */
const awaitExit = (channel: Channel, options: DecodedExecOptions): Effect.Effect<ChannelExit, MachineError> => {
  const exit = Deferred.await(channel.exit)
  const timed = options.timeout === undefined || !Duration.isFinite(options.timeout)
    ? exit
    : Effect.flatMap(
      Effect.timeoutOption(exit, options.timeout),
      Option.match({
        onSome: Effect.succeed,
        onNone: () => Effect.zipRight(Effect.ignore(channel.terminate("timeout")), exit)
      })
    )
  const stdin = options.stdin
  if (stdin === undefined || stdin === "pipe") return timed
  return Effect.flatMap(Effect.fork(feedStdin(channel, stdin)), (feeder) => Effect.ensuring(timed, Fiber.interrupt(feeder)))
}

const startProcess = (
  client: AgentClient,
  command: string,
  options: DecodedExecOptions
): Effect.Effect<Process, MachineError | InvalidOptions, Scope.Scope> =>
  Effect.gen(function*() {
    const queued = yield* QueuedOutput.make
    const { channel, exit } = yield* openChannel(client, command, options, queued)
    const output = (mailbox: Mailbox.Mailbox<Uint8Array, MachineError>) =>
      Mailbox.toStream(mailbox).pipe(Stream.tap((bytes) => channel.consumed(bytes.length)))
    return {
      stdout: output(queued.stdout),
      stderr: withStartError(output(queued.stderr), channel),
      exit,
      exitCode: Effect.map(exit, (status) => status.exitCode),
      stdin: Sink.forEach((bytes: Uint8Array) => channel.writeStdin(bytes)).pipe(
        Sink.mapEffect(() => channel.closeStdin())
      ),
      kill: (signal = "SIGTERM") => channel.signal(signalNumbers[signal])
    } satisfies Process
  })

/**
 * A command that could not start (bad cwd, exec failure) reads like a shell's failure:
 * the agent's reason on stderr and exit code 127. Empty for every other command.
 */
const startErrorText = (channel: Channel): Effect.Effect<string> =>
  Effect.map(Effect.option(channel.exit), (ended) => Option.match(ended, { onNone: () => "", onSome: startErrorLine }))

const startErrorLine = (ended: ChannelExit): string =>
  ended.startError === undefined ? "" : `v86box: ${ended.startError}\n`

const withStartError = (stderr: Stream.Stream<Uint8Array, MachineError>, channel: Channel) =>
  Stream.concat(
    stderr,
    Stream.unwrap(
      Effect.map(startErrorText(channel), (text) => text === "" ? Stream.empty : Stream.make(new TextEncoder().encode(text)))
    )
  )

const feedStdin = (channel: Channel, input: string | Uint8Array | Stream.Stream<Uint8Array, unknown>) => {
  const bytes = typeof input === "string" ? Stream.make(new TextEncoder().encode(input)) : input instanceof Uint8Array ? Stream.make(input) : input
  return Stream.runForEach(bytes, (chunk) => channel.writeStdin(chunk)).pipe(
    // A failing input stream still closes stdin: the command sees EOF, not a hang.
    Effect.ensuring(Effect.ignore(channel.closeStdin())),
    Effect.ignore
  )
}

/** Closing a command's scope: kill what still runs and wait (bounded) until the guest says it is gone. */
const endChannel = (channel: Channel) =>
  Effect.gen(function*() {
    if (channel.done) return
    yield* Effect.ignore(channel.discardOutput())
    yield* Effect.ignore(channel.signal(signalNumbers.SIGKILL))
    yield* channel.exit.pipe(Effect.ignore, Effect.timeout(killGrace), Effect.ignore)
  })

/**
 * Compiling the 2 MB emulator takes tens of ms: once per process per wasm binary, keyed
 * by content; and by the bytes object, which resolving unchanged files gives again
 * (hashing 2 MB costs ~6 ms of a standby's ~120 ms).
 */
const compiledWasm = new Map<string, WebAssembly.Module>()
const compiledWasmOf = new WeakMap<Uint8Array, WebAssembly.Module>()

const compileWasm = (wasm: Uint8Array) =>
  Effect.suspend(() => {
    // The same bytes object again (assets re-resolved from unchanged files): no hashing.
    const known = compiledWasmOf.get(wasm)
    if (known !== undefined) return Effect.succeed(known)
    const key = createHash("sha256").update(wasm).digest("hex")
    const cached = compiledWasm.get(key)
    if (cached !== undefined) return Effect.succeed(cached).pipe(Effect.tap((module) => compiledWasmOf.set(wasm, module)))
    return Effect.tryPromise({
      try: () => WebAssembly.compile(wasm as Uint8Array<ArrayBuffer>),
      catch: (error) => new MachineError({ reason: `cannot compile the emulator's wasm: ${String(error)}`, consoleTail: "" })
    }).pipe(Effect.tap((module) => {
      compiledWasm.set(key, module)
      compiledWasmOf.set(wasm, module)
    }))
  })
