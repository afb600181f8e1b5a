/**
 * The sandbox service: `const box = yield* V86Box`, then `box.exec("...")`.
 *
 * @since 0.1.0
 */
import type * as FileSystem from "@effect/platform/FileSystem"
import * as Context from "effect/Context"
import type * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import type * as Scope from "effect/Scope"
import type {
  AssetError,
  BootTimeout,
  CommandTimeout,
  InvalidOptions,
  MachineError,
  OutputLimitExceeded,
  SnapshotError
} from "./Errors.ts"
import * as internal from "./internal/box.ts"
import * as promiseApi from "./internal/promiseApi.ts"
import type { PromiseBox } from "./internal/promiseApi.ts"
import type { ExecOptions, V86BoxOptions } from "./Options.ts"
import type { ExecResult, Process } from "./Process.ts"
import type { Snapshot } from "./Snapshot.ts"

export type { PromiseBox, PromiseExecOptions } from "./internal/promiseApi.ts"

/**
 * What `box.status` reports.
 *
 * @since 0.1.0
 * @category models
 */
export interface Status {
  /** The guest agent answers commands. False once the machine failed or shut down. */
  readonly ready: boolean
  /** Commands started and not yet ended. */
  readonly pending: number
  /** The guest agent's version, from its ready frame. */
  readonly agentVersion: string
  /** Milliseconds from the start of the layer to the agent's ready frame. */
  readonly bootMillis: number
  /** How this sandbox started (a replayed transcript says `"boot"`, as it was recorded). */
  readonly startedFrom: StartedFrom
}

/**
 * How a sandbox started: booted cold, resumed from the warm-start state, taken as the
 * ready standby (`standby: true`), or forked from a snapshot (`fromSnapshot`).
 *
 * @since 0.1.0
 * @category models
 */
export type StartedFrom = "boot" | "warmStart" | "standby" | "snapshot"

/**
 * The sandbox service.
 *
 * @since 0.1.0
 * @category tags
 */
export class V86Box extends Context.Tag("v86box/V86Box")<V86Box, V86Box.Service>() {
  /**
   * A sandbox for the layer's lifetime: resolves the assets, boots the VM in a worker
   * thread and waits for the guest agent, all within `bootTimeout`. Releasing the layer
   * (or interrupting it mid-boot) shuts the VM down and ends its worker.
   *
   * @since 0.1.0
   * @category layers
   */
  static layer(
    options?: V86BoxOptions
  ): Layer.Layer<V86Box, BootTimeout | AssetError | MachineError | InvalidOptions | SnapshotError> {
    return Layer.scoped(V86Box, internal.make(options))
  }

  /**
   * A sandbox for code outside Effect. Failures reject with the same tagged errors.
   *
   * ```ts
   * await using box = await V86Box.open()
   * const { stdout, exitCode } = await box.exec("echo hi", { timeout: "5 seconds" })
   * ```
   *
   * @since 0.1.0
   * @category constructors
   */
  static open(options?: V86BoxOptions): Promise<PromiseBox> {
    return promiseApi.open(V86Box, V86Box.layer(options))
  }
}

/**
 * @since 0.1.0
 */
export declare namespace V86Box {
  /**
   * @since 0.1.0
   * @category models
   */
  export interface Service {
    /**
     * Runs `bash -c command` to its end and collects its output. A non-zero exit is a
     * result; a timeout or an output flood is an error (the command is killed).
     */
    readonly exec: (
      command: string,
      options?: ExecOptions
    ) => Effect.Effect<ExecResult, CommandTimeout | OutputLimitExceeded | MachineError | InvalidOptions>
    /**
     * Starts `bash -c command` and hands back its streams. Closing the scope kills
     * the command (its whole process group) if it still runs.
     */
    readonly start: (
      command: string,
      options?: ExecOptions
    ) => Effect.Effect<Process, MachineError | InvalidOptions, Scope.Scope>
    readonly status: Effect.Effect<Status>
    /**
     * Saves the whole sandbox (memory, running kernel, files written in it) between
     * commands; with a `path`, also writes it there atomically. `V86Box.layer({
     * fromSnapshot })` starts forks from it. Fails with `SnapshotError` while commands run.
     */
    readonly snapshot: (path?: string) => Effect.Effect<Snapshot, SnapshotError | MachineError | InvalidOptions>
    /**
     * The guest's filesystem as an `@effect/platform` `FileSystem` (operations run as
     * root; see `GuestFileSystem.make` for another user).
     */
    readonly fs: FileSystem.FileSystem
  }
}
