/**
 * A pool of sandboxes, each in its own worker thread: many commands at once across the
 * host's cores, and sandboxes ready before they are asked for. Built on Effect's `Pool`.
 *
 * ```ts
 * const pool = yield* V86BoxPool
 * const results = yield* Effect.forEach(jobs, (job) => pool.exec(job), { concurrency: 4 })
 * ```
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import type * as Duration from "effect/Duration"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type { AssetError, BootTimeout, CommandTimeout, InvalidOptions, MachineError, OutputLimitExceeded, SnapshotError } from "./Errors.ts"
import * as internal from "./internal/pool.ts"
import type { ExecOptions, V86BoxOptions } from "./Options.ts"
import type { ExecResult } from "./Process.ts"
import type { V86Box } from "./V86Box.ts"

/**
 * Options of `V86BoxPool.layer`.
 *
 * @since 0.1.0
 * @category models
 */
export interface V86BoxPoolOptions {
  /** Options of every sandbox; with `fromSnapshot`, every sandbox is a fork of that snapshot. */
  readonly sandbox?: V86BoxOptions | undefined
  /** Most sandboxes at once (1–64). Default: the host's available parallelism. */
  readonly size?: number | undefined
  /** Sandboxes kept started even when idle, ready for the next use (0–size). Default 1. */
  readonly min?: number | undefined
  /** How long a sandbox above `min` may stay idle before it is shut down. Default 1 minute. */
  readonly timeToLive?: Duration.DurationInput | undefined
  /**
   * `"fresh"` (default): every use gets a sandbox no one used before (resumed from the
   * warm-start state or the snapshot) and it is shut down after; nothing one use does is
   * seen by the next. `"reuse"`: a sandbox serves one use after another, files and all
   * (faster; for trusted work). Either way a sandbox whose machine failed is replaced.
   */
  readonly mode?: "fresh" | "reuse" | undefined
}

/**
 * Why a sandbox could not be had: its options were bad, or it would not start.
 *
 * @since 0.1.0
 * @category errors
 */
export type SandboxError = BootTimeout | AssetError | MachineError | InvalidOptions | SnapshotError

/**
 * The pool service.
 *
 * @since 0.1.0
 * @category tags
 */
export class V86BoxPool extends Context.Tag("v86box/V86BoxPool")<V86BoxPool, V86BoxPool.Service>() {
  /**
   * A pool for the layer's lifetime. Building it checks the options and starts `min`
   * sandboxes in the background; releasing it shuts every sandbox down (waiting for
   * uses in progress).
   *
   * @since 0.1.0
   * @category layers
   */
  static layer(options?: V86BoxPoolOptions): Layer.Layer<V86BoxPool, InvalidOptions> {
    return Layer.scoped(V86BoxPool, internal.make(options))
  }

  /**
   * A pool for code outside Effect: `await pool.exec("...")`, then `await pool.close()`.
   *
   * @since 0.1.0
   * @category constructors
   */
  static open(options?: V86BoxPoolOptions): Promise<V86BoxPool.PromisePool> {
    return internal.open(V86BoxPool, V86BoxPool.layer(options))
  }
}

/**
 * @since 0.1.0
 */
export declare namespace V86BoxPool {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /**
     * Runs `use` with a sandbox of the pool to itself, waiting for one if all are busy.
     * In `"fresh"` mode the sandbox is shut down afterwards and a new one resumed.
     */
    readonly use: <A, E, R>(use: (box: V86Box.Service) => Effect.Effect<A, E, R>) => Effect.Effect<A, E | SandboxError, R>
    /** `box.exec` on a sandbox of the pool. */
    readonly exec: (
      command: string,
      options?: ExecOptions
    ) => Effect.Effect<ExecResult, CommandTimeout | OutputLimitExceeded | SandboxError>
  }

  /**
   * The pool driven with Promises.
   *
   * @since 0.1.0
   * @category models
   */
  export interface PromisePool extends AsyncDisposable {
    /** `box.exec` on a sandbox of the pool. */
    readonly exec: (command: string, options?: ExecOptions) => Promise<ExecResult>
    /** Shuts every sandbox down. Safe to call more than once. */
    readonly close: () => Promise<void>
  }
}
