/**
 * The sandbox for code outside Effect: `await V86Box.open()`, `await box.exec(...)`,
 * `await box.close()` (or `await using`). Failures reject with the same tagged errors
 * the Effect API fails with.
 */
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Scope from "effect/Scope"
import type { ExecOptions } from "../Options.ts"
import type { ExecResult } from "../Process.ts"
import type { Snapshot } from "../Snapshot.ts"
import type { Status, V86Box } from "../V86Box.ts"

/**
 * Options of the Promise `exec`: those of the Effect API, plus an `AbortSignal` that
 * kills the command when it fires.
 */
export interface PromiseExecOptions extends ExecOptions {
  readonly signal?: AbortSignal | undefined
}

/** A sandbox driven with Promises. */
export interface PromiseBox extends AsyncDisposable {
  /** Runs `bash -c command` to its end; rejects with `CommandTimeout`, `OutputLimitExceeded`… as `exec` fails. */
  readonly exec: (command: string, options?: PromiseExecOptions) => Promise<ExecResult>
  /** What `box.status` reports. */
  readonly status: () => Promise<Status>
  /** Saves the sandbox between commands (to `path` too, if given); `V86Box.open({ fromSnapshot })` forks it. */
  readonly snapshot: (path?: string) => Promise<Snapshot>
  /** Shuts the VM down. Safe to call more than once. */
  readonly close: () => Promise<void>
}

/** Runs an effect; a failure rejects with its error itself (a tagged error), not a wrapper. */
export const run = async <A, E>(effect: Effect.Effect<A, E>, signal?: AbortSignal): Promise<A> => {
  const exit = await Effect.runPromiseExit(effect, signal === undefined ? undefined : { signal })
  if (Exit.isSuccess(exit)) return exit.value
  throw Cause.squash(exit.cause)
}

/**
 * Builds a layer for code outside Effect: its service, and `close` (idempotent) to
 * release it. A build that fails releases what it had started, then rejects.
 */
export const buildService = async <I, S>(
  tag: Context.Tag<I, S>,
  layer: Layer.Layer<I, unknown>
): Promise<{ readonly service: S; readonly close: () => Promise<void> }> => {
  const scope = Effect.runSync(Scope.make())
  const context = await run(Layer.buildWithScope(layer, scope)).catch(async (error: unknown) => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    throw error
  })
  let closed: Promise<void> | undefined
  return { service: Context.get(context, tag), close: () => (closed ??= Effect.runPromise(Scope.close(scope, Exit.void))) }
}

export const open = async (
  tag: Context.Tag<V86Box, V86Box.Service>,
  layer: Layer.Layer<V86Box, unknown>
): Promise<PromiseBox> => {
  const { service, close } = await buildService(tag, layer)
  return {
    exec: (command, options) => {
      const { signal, ...execOptions } = options ?? {}
      return run(service.exec(command, execOptions), signal)
    },
    status: () => run(service.status),
    snapshot: (path) => run(service.snapshot(path)),
    close,
    [Symbol.asyncDispose]: close
  }
}
