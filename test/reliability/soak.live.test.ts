/**
 * Soak: many commands on one sandbox, one after another and many at once. None fails, and
 * neither the host process's memory nor the guest agent's grows past 10 % of what it was
 * after a warm-up (the host's: plus the guest's RAM, see `allowedGrowth`).
 */
import { expect, layer } from "@effect/vitest"
import * as Effect from "effect/Effect"
import { V86Box } from "../../src/index.ts"
import { agentRssKb, hostRss, megabytes, report, scaled } from "./support.ts"

const sequential = scaled({ full: 10_000, ci: 300 })
const concurrent = scaled({ full: 1_000, ci: 100 })
const batchSize = 50
/**
 * Host RSS levels off once V8 has sized its heap and v86's JIT has compiled the command
 * paths: 100 execs were too few. Since the guest's code is compiled by TurboFan on
 * compiler threads (each compile takes up to ~40 MB for a moment, which the allocator
 * keeps), 400 plus one concurrent batch left the end of the run compiling still: the
 * host grew 4-9 % in four runs and 13 % in a fifth, in its last concurrent batches.
 */
const warmUpCommands = 800
const warmUpBatches = 2
/**
 * What the issue promises: memory stays within this fraction of its warmed-up value. On
 * the host, plus the guest's RAM: the host backs a resumed guest's memory with RAM only
 * as the guest first uses each page (it starts with the ~19 MiB its saved state holds),
 * growth bounded by the guest's size, not a leak. (Measured: up to +57 MB in the
 * concurrent batches, where 50 commands at once use pages the guest had not used yet.)
 */
const allowedGrowth = 0.1

interface Sample {
  readonly after: string
  readonly hostRssBytes: number
  readonly agentRssKb: number
}

layer(V86Box.layer(), { timeout: "120 seconds", excludeTestServices: true })("soak", (it) => {
  it.effect(`${sequential} sequential and ${concurrent} concurrent execs (${batchSize} at a time): no error, memory flat`, () =>
    Effect.gen(function*() {
      const box = yield* V86Box
      const echo = (index: number) =>
        Effect.flatMap(box.exec(`echo ${index}`), (result) =>
          result.stdout === `${index}\n` && result.exitCode === 0
            ? Effect.void
            : Effect.dieMessage(`exec ${index} returned ${JSON.stringify(result)}`))
      const batch = (from: number) =>
        Effect.forEach(Array.from({ length: batchSize }, (_, offset) => from + offset), echo, { concurrency: batchSize, discard: true })
      const sample = (after: string) =>
        Effect.map(agentRssKb(box), (agent): Sample => ({ after, hostRssBytes: hostRss(), agentRssKb: agent }))

      // The warm-up runs both kinds, so every buffer either side keeps is already there.
      for (let index = 0; index < warmUpCommands; index++) yield* echo(index)
      for (let done = 0; done < warmUpBatches; done++) yield* batch(done * batchSize)
      const warm = yield* sample("warm-up")
      const guestRamBytes = Number((yield* box.exec("awk '/^MemTotal:/ { print $2 }' /proc/meminfo")).stdout) * 1024
      const samples: Array<Sample> = [warm]

      const started = Date.now()
      for (let index = 0; index < sequential; index++) {
        yield* echo(index)
        if ((index + 1) % (sequential / 10) === 0) samples.push(yield* sample(`${index + 1} sequential`))
      }
      const sequentialMillis = Date.now() - started
      for (let from = 0; from < concurrent; from += batchSize) {
        yield* batch(from)
        if ((from + batchSize) % (concurrent / 5) === 0) samples.push(yield* sample(`${from + batchSize} concurrent`))
      }
      const concurrentMillis = Date.now() - started - sequentialMillis

      const hostPeak = Math.max(...samples.map((entry) => entry.hostRssBytes))
      const agentPeak = Math.max(...samples.map((entry) => entry.agentRssKb))
      report("soak", {
        sequential,
        concurrent,
        sequentialMillisPerExec: Math.round(sequentialMillis / sequential),
        concurrentMillisPerExec: Math.round(concurrentMillis / concurrent),
        hostRssMB: samples.map((entry) => megabytes(entry.hostRssBytes)),
        agentRssKb: samples.map((entry) => entry.agentRssKb),
        hostGrowthPercent: Math.round(((hostPeak - warm.hostRssBytes) / warm.hostRssBytes) * 1000) / 10,
        guestRamMB: megabytes(guestRamBytes),
        agentGrowthPercent: Math.round(((agentPeak - warm.agentRssKb) / warm.agentRssKb) * 1000) / 10
      })
      expect(guestRamBytes).toBeGreaterThan(0)
      expect(hostPeak).toBeLessThanOrEqual(warm.hostRssBytes * (1 + allowedGrowth) + guestRamBytes)
      expect(agentPeak).toBeLessThanOrEqual(warm.agentRssKb * (1 + allowedGrowth))
      expect((yield* box.status).pending).toBe(0)
    }), (sequential + concurrent) * 2_000)
})
