/**
 * Guest faults replayed from transcripts/faults-*.ndjson: the kernel's last words in the
 * recorded log fail the machine exactly as they do live.
 */
import { describe, it } from "@effect/vitest"
import { Testkit } from "../testkit/index.ts"
import { faultSuite } from "./suites/faults.ts"

describe("guest faults, replayed", () => {
  faultSuite(it.effect, (fault) => Testkit.layer(`transcripts/faults-${fault.name}.ndjson`))
})
