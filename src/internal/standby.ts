/**
 * The standby: a sandbox machine resumed from the warm-start state in the background and
 * warmed up, kept for the next layer build of this process that asks for the same state
 * (`standby`, on by default).
 *
 * Why warmed up: v86 keeps no compiled code in a saved state, and compiles a guest page
 * only after it ran a while interpreted, so a new emulator's commands get faster for
 * hundreds of commands (`exec("true")` ~11 ms in the first 100, ~6 after ~600 on this
 * machine; docs/profiling.md). The standby is resumed into the emulator the released
 * sandbox leaves (v86Machine.ts keeps its compiled code) and runs commands until they
 * stop getting faster (box.ts); taking it costs only the INIT that gives it fresh time,
 * entropy and hostname, and ends the warm-up after its command in progress.
 *
 * One standby per process, made when a sandbox that asked for one is released (sequential
 * use: tests, agents), dropped after `standbyLifetimeMillis` unused. It never keeps the process
 * alive: its worker is unreferenced and nothing here sets an Effect timer.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Option from "effect/Option"
import * as Scope from "effect/Scope"
import { statSync } from "node:fs"
import type { MachineError } from "../Errors.ts"
import type { AgentClient } from "./agentClient.ts"
import { errorReply, tagOf } from "./ninePWire.ts"

/** How long an unused standby is kept (its emulator holds ~100 MB). */
const standbyLifetimeMillis = 2 * 60 * 1000
/** How long taking a standby waits for it to finish resuming. */
const resumeWaitLimit = Duration.seconds(10)
/** How long taking a standby waits for its warm-up command in progress to end. */
const warmUpStepLimit = Duration.seconds(10)

/** A file server the standby's 9P requests go to once a sandbox takes it. */
export type FileServer = (request: Uint8Array) => Promise<Uint8Array>

/** What a standby is for: a state file (as it was when read) in a machine of a given size. */
export interface StandbyKey {
  readonly statePath: string
  /**
   * The files a standby for it is resumed from: the state file and its trained state
   * (box.ts). Either may be missing: a warm-start state is pruned while its trained
   * state stays (cacheFiles.ts), a trained state is made later.
   */
  readonly sourcePaths: ReadonlyArray<string>
  readonly imageFingerprint: string
  readonly memoryMB: number
}

/** A resumed machine, before any INIT. */
export interface ResumedMachine {
  readonly client: AgentClient
  readonly agent: string
  /** Makes its worker an ordinary sandbox's worker (referenced, counted). */
  readonly adopt: () => void
}

/** How to make and warm a standby: given by the sandbox code, which knows machines. */
export interface StandbyRecipe {
  readonly key: StandbyKey
  /** Resumes the state into a detached machine whose 9P requests go to `files`. */
  readonly resume: (files: FileServer) => Effect.Effect<ResumedMachine, MachineError, Scope.Scope>
  /**
   * Runs warm-up commands until the machine is warm enough or `stopped()` says to stop;
   * it checks between commands, so a sandbox taking the standby waits for one at most.
   */
  readonly warmUp: (machine: ResumedMachine, stopped: () => boolean) => Effect.Effect<void, unknown>
  /**
   * Trains the trained state (box.ts), if it should be, in a machine of its own, until
   * done or `stopped()`; run while the process is idle (`trainWhenIdle`).
   */
  readonly train?: ((stopped: () => boolean) => Effect.Effect<void, unknown, Scope.Scope>) | undefined
}

interface Standby {
  readonly id: string
  /**
   * The source files there when it was made, as they were then: a standby made from
   * other versions of them does not fit (one that appeared since does not matter).
   */
  readonly sources: ReadonlyArray<{ readonly path: string; readonly version: string }>
  readonly scope: Scope.CloseableScope
  readonly resumed: ResumedMachine
  readonly redirect: { target: FileServer | undefined }
  readonly warming: Fiber.RuntimeFiber<void>
  /** `stop` ends the warm-up after its current command; `warm` says it ended by itself. */
  readonly warmUp: { stop: boolean; warm: boolean }
  readonly expiry: ReturnType<typeof setTimeout>
}

let standby: Standby | undefined
/** The standby being made now, so two releases in a row do not make two (and `clear` can stop it). */
let preparing: { readonly id: string; fiber?: Fiber.RuntimeFiber<void> } | undefined

const idOf = (key: StandbyKey) => `${key.statePath}\n${key.imageFingerprint}\n${key.memoryMB}`

/** A file's size and time, or undefined if it is not there. */
const versionOf = (path: string): string | undefined => {
  try {
    const stat = statSync(path)
    return `${stat.size}:${stat.mtimeMs}`
  } catch {
    return undefined
  }
}

/** The key's source files that are there, with their versions. */
const sourcesOf = (key: StandbyKey): Standby["sources"] =>
  key.sourcePaths.flatMap((path) => {
    const version = versionOf(path)
    return version === undefined ? [] : [{ path, version }]
  })

/** Whether the files a standby was made from are all still there, as they were. */
const sourcesUnchanged = (sources: Standby["sources"]) =>
  sources.length > 0 && sources.every(({ path, version }) => versionOf(path) === version)

const unavailable: FileServer = (request) => Promise.resolve(errorReply(tagOf(request), "EOPNOTSUPP"))

const drop = (dropped: Standby) =>
  Effect.gen(function*() {
    if (standby === dropped) standby = undefined
    clearTimeout(dropped.expiry)
    dropped.warmUp.stop = true
    yield* Scope.close(dropped.scope, Exit.void)
  })

/**
 * Makes the standby for `recipe` in the background (a daemon fiber: whoever asked may be
 * gone by then), replacing one made for another state. Failures only mean no standby.
 */
export const prepare = (recipe: StandbyRecipe): Effect.Effect<void> =>
  Effect.suspend(() => {
    const id = idOf(recipe.key)
    if (preparing?.id === id || standby?.id === id) return Effect.void
    const preparation: { readonly id: string; fiber?: Fiber.RuntimeFiber<void> } = { id }
    preparing = preparation
    const make = Effect.gen(function*() {
      if (standby !== undefined) yield* drop(standby)
      const sources = sourcesOf(recipe.key)
      const scope = yield* Scope.make()
      yield* Effect.gen(function*() {
        const redirect: { target: FileServer | undefined } = { target: undefined }
        const resumed = yield* recipe.resume((request) => (redirect.target ?? unavailable)(request)).pipe(
          Scope.extend(scope)
        )
        const warmUp = { stop: false, warm: false }
        const warming = yield* recipe.warmUp(resumed, () => warmUp.stop).pipe(
          Effect.tap(() =>
            Effect.sync(() => {
              warmUp.warm = !warmUp.stop
              if (warmUp.warm) trainWhenIdle(recipe, () => standby?.warmUp === warmUp)
            })
          ),
          Effect.ignore,
          Effect.forkDaemon
        )
        const made: Standby = {
          id,
          sources,
          scope,
          resumed,
          redirect,
          warming,
          warmUp,
          // A plain timer, unreferenced: an unused standby must not keep the process alive.
          expiry: setTimeout(() => Effect.runFork(drop(made)), standbyLifetimeMillis).unref()
        }
        standby = made
      }).pipe(
        // Failed or stopped (by `clear`) before it was kept: nothing of it stays.
        Effect.onError((cause) => standby?.scope === scope ? Effect.void : Scope.close(scope, Exit.failCause(cause)))
      )
    })
    return make.pipe(
      Effect.ignore,
      Effect.ensuring(Effect.sync(() => {
        if (preparing === preparation) preparing = undefined
      })),
      // Asked for from a finalizer, which runs uninterruptibly: what the standby forks
      // (the agent client's reader) must stay interruptible, or it could never be shut down.
      Effect.interruptible,
      Effect.forkDaemon,
      Effect.map((fiber) => {
        preparation.fiber = fiber
      })
    )
  })

/**
 * Training runs only while the process is idle: it needs ~20 s of emulation in a machine
 * of its own, which would take a core from the sandboxes. It starts once a warm standby
 * has waited untaken for `idleBeforeTrainingMillis`, and stops (its machine shut down,
 * its work lost) as soon as any sandbox starts (`stopTraining`); the next idle moment
 * starts it again, at most `trainingStartsPerProcess` times.
 */
const idleBeforeTrainingMillis = 3000
const trainingStartsPerProcess = 3
let trainingStarts = 0
let training: { readonly stop: { stopped: boolean }; readonly fiber: Fiber.RuntimeFiber<void> } | undefined
let trainingTimer: ReturnType<typeof setTimeout> | undefined

const trainWhenIdle = (recipe: StandbyRecipe, stillIdle: () => boolean) => {
  const train = recipe.train
  if (train === undefined || training !== undefined || trainingStarts >= trainingStartsPerProcess) return
  clearTimeout(trainingTimer)
  // A plain timer, unreferenced: training never keeps the process alive.
  trainingTimer = setTimeout(() => {
    trainingTimer = undefined
    if (!stillIdle() || training !== undefined) return
    trainingStarts++
    const stop = { stopped: false }
    const fiber = Effect.runFork(
      Effect.scoped(train(() => stop.stopped)).pipe(
        Effect.ignore,
        Effect.ensuring(Effect.sync(() => {
          if (training?.stop === stop) training = undefined
        }))
      )
    )
    training = { stop, fiber }
  }, idleBeforeTrainingMillis).unref()
}

/** Stops the training in progress, if any (a sandbox is starting); `wait` for its machine to be shut down. */
export const stopTraining = (wait = false): Effect.Effect<void> =>
  Effect.suspend(() => {
    clearTimeout(trainingTimer)
    trainingTimer = undefined
    const running = training
    if (running === undefined) return Effect.void
    training = undefined
    running.stop.stopped = true
    return wait ? Fiber.interrupt(running.fiber) : Fiber.interruptFork(running.fiber)
  })

/** Whether training is waiting for an idle moment or running (the benchmark and tests wait for it). */
export const trainingState = (): "none" | "scheduled" | "running" =>
  training !== undefined ? "running" : trainingTimer !== undefined ? "scheduled" : "none"

/**
 * Takes the standby made for `key`, if there is one that still fits: its machine then
 * lives in the caller's scope and answers 9P requests with `files`. A standby still being
 * resumed is waited for (back-to-back sandboxes: the previous release started it a moment
 * ago, and resuming into its recycled emulator is quicker than a new emulator), and so is
 * the warm-up command in progress.
 */
export const take = (
  key: StandbyKey,
  files: FileServer | undefined
): Effect.Effect<Option.Option<ResumedMachine>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const resuming = preparing?.id === idOf(key) ? preparing.fiber : undefined
    if (standby === undefined && resuming !== undefined) {
      yield* Fiber.await(resuming).pipe(Effect.timeoutOption(resumeWaitLimit))
    }
    const taken = standby
    if (taken === undefined || taken.id !== idOf(key)) return Option.none()
    standby = undefined
    clearTimeout(taken.expiry)
    taken.warmUp.stop = true
    // A warm-up command takes well under a second; one that does not end means a guest
    // that will not serve the sandbox either.
    const warmUpEnded = yield* Fiber.await(taken.warming).pipe(Effect.timeoutOption(warmUpStepLimit))
    if (
      Option.isNone(warmUpEnded) || !sourcesUnchanged(taken.sources) ||
      !taken.resumed.client.isAlive
    ) {
      yield* Scope.close(taken.scope, Exit.void)
      return Option.none()
    }
    taken.redirect.target = files
    taken.resumed.adopt()
    yield* Effect.addFinalizer((exit) => Scope.close(taken.scope, exit))
    return Option.some(taken.resumed)
  })

/**
 * The standby for a state file (any, without one): none, being resumed, resumed and
 * still warming up, or warm. Tests and the benchmark wait for one.
 */
export const stateOf = (statePath?: string): "none" | "resuming" | "warming" | "warm" => {
  const matches = (id: string | undefined) => id !== undefined && (statePath === undefined || id.startsWith(`${statePath}\n`))
  if (standby !== undefined && matches(standby.id)) return standby.warmUp.warm ? "warm" : "warming"
  return matches(preparing?.id) ? "resuming" : "none"
}

/** Stops training, the standby being made and shuts the standby down, if any (tests end with no emulator left). */
export const clear: Effect.Effect<void> = Effect.gen(function*() {
  yield* stopTraining(true)
  const fiber = preparing?.fiber
  if (fiber !== undefined) yield* Fiber.interrupt(fiber)
  if (standby !== undefined) yield* drop(standby)
})
