/**
 * Boots the bundled image (offline) and runs a few commands.
 *
 *   npm run example
 */
import * as Effect from "effect/Effect"
import { V86Box } from "../src/index.ts"

const program = Effect.gen(function*() {
  const box = yield* V86Box

  const uname = yield* box.exec("uname -a")
  console.log(`uname -a      → ${uname.stdout.trim()}`)

  const failing = yield* box.exec("echo 'to stderr' >&2; exit 3")
  console.log(`exit code     → ${failing.exitCode}`)
  console.log(`stderr        → ${failing.stderr.trim()}`)

  const tools = yield* box.exec("bash --version | head -1; ls --version | head -1; echo '{\"a\":[1,2]}' | jq -c .a")
  console.log(`GNU userland  → ${tools.stdout.trim().split("\n").join(" | ")}`)

  const status = yield* box.status
  console.log(`booted in ${status.bootMillis} ms, agent ${status.agentVersion}`)
})

Effect.runPromise(program.pipe(Effect.provide(V86Box.layer()))).catch((error) => {
  console.error(String(error))
  process.exit(1)
})
