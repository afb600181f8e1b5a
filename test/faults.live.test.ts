/**
 * Guest faults against live VMs.
 */
import { describe, it } from "@effect/vitest"
import { V86Box } from "../src/index.ts"
import { faultSuite } from "./suites/faults.ts"

describe("guest faults, live", () => {
  faultSuite(it.live, () => V86Box.layer())
})
