/**
 * The sandbox pool over Effect's `Pool`: each item is a whole sandbox (its own scope,
 * worker and emulator); `"fresh"` invalidates a sandbox after its one use, `"reuse"` only
 * when its machine failed. Idle sandboxes above `min` are shut down after `timeToLive`.
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberSet from "effect/FiberSet"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Pool from "effect/Pool"
import * as Schema from "effect/Schema"
import * as Scope from "effect/Scope"
import { availableParallelism } from "node:os"
import { InvalidOptions } from "../Errors.ts"
import { decodeBoxOptions, DurationInput } from "../Options.ts"
import { V86Box } from "../V86Box.ts"
import type { V86BoxPool, V86BoxPoolOptions } from "../V86BoxPool.ts"
import { buildService, run } from "./promiseApi.ts"

const defaultTimeToLive = Duration.minutes(1)

const PoolOptionsSchema = Schema.Struct({
  size: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.between(1, 64))),
  min: Schema.optional(Schema.Number.pipe(Schema.int(), Schema.between(0, 64))),
  timeToLive: Schema.optional(DurationInput),
  mode: Schema.optional(Schema.Literal("fresh", "reuse"))
})

/** The pool's own options and the sandboxes' (checked now, not at the first use), every bad field listed. */
const decodePoolOptions = (options: V86BoxPoolOptions | undefined) =>
  Effect.gen(function*() {
    const { sandbox, ...pool } = options ?? {}
    const [decoded, sandboxCheck] = yield* Effect.all([
      Schema.decodeUnknown(PoolOptionsSchema, { errors: "all", onExcessProperty: "error" })(pool).pipe(Effect.either),
      Effect.either(decodeBoxOptions(sandbox))
    ])
    const issues = new Map<string, string>()
    if (decoded._tag === "Left") {
      // A field of `T | undefined` fails twice (once per member): its first reason says it.
      for (const issue of ParseResult.ArrayFormatter.formatErrorSync(decoded.left)) {
        const path = issue.path.join(".")
        if (!issues.has(path)) issues.set(path, `${path}: ${issue.message}`)
      }
    }
    if (sandboxCheck._tag === "Left") sandboxCheck.left.issues.forEach((issue, index) => issues.set(`sandbox${index}`, `sandbox.${issue}`))
    if (decoded._tag === "Left" || issues.size > 0) return yield* Effect.fail(new InvalidOptions({ issues: [...issues.values()] }))
    const size = decoded.right.size ?? Math.max(1, Math.min(64, availableParallelism()))
    const min = decoded.right.min ?? 1
    if (min > size) return yield* Effect.fail(new InvalidOptions({ issues: [`min: ${min} is more than size (${size})`] }))
    return { sandbox, size, min, timeToLive: decoded.right.timeToLive ?? defaultTimeToLive, mode: decoded.right.mode ?? "fresh" }
  })

export const make = (options: V86BoxPoolOptions | undefined): Effect.Effect<V86BoxPool.Service, InvalidOptions, Scope.Scope> =>
  Effect.gen(function*() {
    const { sandbox, size, min, timeToLive, mode } = yield* decodePoolOptions(options)
    // Sandboxes being shut down. Effect's Pool shuts an idle item down from its TTL fiber,
    // and a pool closed while that runs waits on the fiber forever (Effect 3.22: seen with
    // a slow item finalizer): so the item's finalizer only starts the shutdown, in a fiber
    // of this set, and closing the pool waits for the set to empty (finalizers run in
    // reverse: the pool's shutdown first, then this wait).
    const shuttingDown = yield* FiberSet.make()
    yield* Effect.addFinalizer(() => FiberSet.awaitEmpty(shuttingDown))
    const acquire = Effect.gen(function*() {
      const scope = yield* Scope.make()
      const context = yield* Layer.build(V86Box.layer(sandbox)).pipe(
        Scope.extend(scope),
        Effect.onError((cause) => Scope.close(scope, Exit.failCause(cause)))
      )
      yield* Effect.addFinalizer((exit) => FiberSet.run(shuttingDown, Scope.close(scope, exit)))
      return Context.get(context, V86Box)
    })
    const pool = yield* Pool.makeWithTTL({
      // Invalidating the item shuts its sandbox down.
      acquire,
      min,
      max: size,
      timeToLive,
      timeToLiveStrategy: "usage"
    })

    const use: V86BoxPool.Service["use"] = (body) =>
      Effect.scoped(
        Effect.gen(function*() {
          const box = yield* pool.get
          return yield* body(box).pipe(
            Effect.ensuring(Effect.gen(function*() {
              const { ready } = yield* box.status
              if (mode === "fresh" || !ready) yield* pool.invalidate(box)
            }))
          )
        })
      )

    return {
      use,
      exec: (command, execOptions) => use((box) => box.exec(command, execOptions))
    }
  })

export const open = async (
  tag: Context.Tag<V86BoxPool, V86BoxPool.Service>,
  layer: Layer.Layer<V86BoxPool, unknown>
): Promise<V86BoxPool.PromisePool> => {
  const { service, close } = await buildService(tag, layer)
  return {
    exec: (command, options) => run(service.exec(command, options)),
    close,
    [Symbol.asyncDispose]: close
  }
}
