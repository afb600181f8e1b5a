/**
 * The benchmark table (npm run bench): v86box beside its peers, all measured in this run.
 *
 *   v86box        the SDK: V86Box.layer + exec/start over the agent protocol
 *   seed-style    the same image with an interactive bash on ttyS0, driven by prompt
 *                 scraping (how the seed project worked)
 *   raw floor     the same image with a byte echo / a flood on the virtio console: what
 *                 the channel itself costs, with no protocol and no shell
 *
 * Options: --quick (fewer runs, for a smoke test).
 */
import * as Effect from "effect/Effect"
import * as Stream from "effect/Stream"
import { parseArgs } from "node:util"
import { V86Box } from "../src/index.ts"
import { bootRawMachine, percentile, type RawMachine } from "./lib/raw.ts"

const { values: flags } = parseArgs({ options: { quick: { type: "boolean", default: false } } })
const quick = flags.quick
const coldRuns = quick ? 1 : 3
const execRuns = quick ? 30 : 200
const stdoutBytes = quick ? 2_000_000 : 20_000_000
const serialBytes = quick ? 20_000 : 200_000

interface Row {
  readonly figure: string
  readonly v86box: number | undefined
  readonly seed: number | undefined
  readonly raw: number | undefined
  readonly unit: string
  /** Whether a larger number is better (throughput) or worse (latency). */
  readonly higherIsBetter: boolean
  readonly goal?: string
}

const timed = async <A>(run: () => Promise<A>): Promise<[number, A]> => {
  const start = performance.now()
  const result = await run()
  return [performance.now() - start, result]
}

const median = (values: ReadonlyArray<number>) => percentile(values, 50)

/** Layer build → first exec result, on a fresh VM each time: booted (cold) or resumed (warm). */
const v86boxStart = async (warmStart: boolean): Promise<number> => {
  // The first warm start may have to boot and save the state: that one is not measured.
  if (warmStart) await Effect.runPromise(Effect.scoped(Effect.flatMap(V86Box, (box) => box.exec("true")).pipe(Effect.provide(V86Box.layer()))))
  const times: Array<number> = []
  for (let run = 0; run < coldRuns; run++) {
    const [ms] = await timed(() =>
      Effect.runPromise(Effect.scoped(Effect.gen(function*() {
        const box = yield* V86Box
        return yield* box.exec("true")
      }).pipe(Effect.provide(V86Box.layer({ warmStart })))))
    )
    times.push(ms)
  }
  return median(times)
}

/** exec("true") latencies and stdout throughput on one VM. */
const v86boxWarm = () =>
  Effect.runPromise(Effect.scoped(Effect.gen(function*() {
    const box = yield* V86Box
    for (let warm = 0; warm < 10; warm++) yield* box.exec("true")
    const latencies: Array<number> = []
    for (let run = 0; run < execRuns; run++) {
      const start = performance.now()
      yield* box.exec("true")
      latencies.push(performance.now() - start)
    }
    const start = performance.now()
    const process = yield* box.start(`head -c ${stdoutBytes} /dev/zero`)
    const received = yield* Stream.runFold(process.stdout, 0, (total, bytes) => total + bytes.length)
    yield* process.exitCode
    const seconds = (performance.now() - start) / 1000
    if (received !== stdoutBytes) throw new Error(`stdout: received ${received} of ${stdoutBytes} bytes`)
    return { p50: percentile(latencies, 50), p95: percentile(latencies, 95), stdoutMBps: stdoutBytes / 1e6 / seconds }
  }).pipe(Effect.provide(V86Box.layer()))))

/** The seed's way: bash on ttyS0, a command typed, the prompt scraped. */
const seedStyle = async () => {
  const [bootMs, machine] = await timed(() => bootRawMachine("serial-shell"))
  try {
    const [firstMs] = await timed(() => machine.serialCommand("true"))
    const latencies: Array<number> = []
    for (let run = 0; run < (quick ? 20 : 100); run++) latencies.push((await timed(() => machine.serialCommand("true")))[0])
    const [floodMs, output] = await timed(() => machine.serialCommand(`head -c ${serialBytes} /dev/zero | tr '\\0' x`))
    if (output.length < serialBytes) throw new Error(`serial: received ${output.length} of ${serialBytes} bytes`)
    return {
      coldMs: bootMs + firstMs,
      p50: percentile(latencies, 50),
      p95: percentile(latencies, 95),
      stdoutMBps: serialBytes / 1e6 / (floodMs / 1000)
    }
  } finally {
    await machine.destroy()
  }
}

/** The channel alone: 1-byte echo round trips, then a flood from the guest. */
const rawFloor = async () => {
  const [bootMs, echo]: [number, RawMachine] = await timed(() => bootRawMachine("virtio-echo"))
  try {
    const latencies: Array<number> = []
    await echo.virtioRoundTrip()
    for (let run = 0; run < execRuns; run++) latencies.push((await timed(() => echo.virtioRoundTrip()))[0])
    const [floodMs] = await timed(() => echo.virtioFlood(stdoutBytes))
    return {
      coldMs: bootMs,
      p50: percentile(latencies, 50),
      p95: percentile(latencies, 95),
      stdoutMBps: stdoutBytes / 1e6 / (floodMs / 1000)
    }
  } finally {
    await echo.destroy()
  }
}

const format = (value: number | undefined, unit: string) =>
  value === undefined ? "—" : unit === "MB/s" ? value.toFixed(2) : value.toFixed(1)

const ratio = (ours: number | undefined, theirs: number | undefined, higherIsBetter: boolean) => {
  if (ours === undefined || theirs === undefined || ours === 0 || theirs === 0) return "—"
  const factor = higherIsBetter ? ours / theirs : theirs / ours
  return `${factor.toFixed(2)}×`
}

const main = async () => {
  console.log(`v86box benchmark — ${quick ? "quick" : "full"} run, node ${process.version}, ${new Date().toISOString()}`)
  const coldMs = await v86boxStart(false)
  const warmMs = await v86boxStart(true)
  const warm = await v86boxWarm()
  const seed = await seedStyle()
  const raw = await rawFloor()

  const rows: Array<Row> = [
    { figure: "cold boot → first result", v86box: coldMs, seed: seed.coldMs, raw: raw.coldMs, unit: "ms", higherIsBetter: false, goal: "≤ 1500" },
    { figure: "warm start → first result", v86box: warmMs, seed: undefined, raw: undefined, unit: "ms", higherIsBetter: false, goal: "≤ 120" },
    { figure: 'exec("true") p50', v86box: warm.p50, seed: seed.p50, raw: raw.p50, unit: "ms", higherIsBetter: false, goal: "≤ 6" },
    { figure: 'exec("true") p95', v86box: warm.p95, seed: seed.p95, raw: raw.p95, unit: "ms", higherIsBetter: false },
    { figure: "stdout throughput", v86box: warm.stdoutMBps, seed: seed.stdoutMBps, raw: raw.stdoutMBps, unit: "MB/s", higherIsBetter: true, goal: "≥ 3" }
  ]
  const header = ["figure", "v86box", "seed-style", "raw floor", "unit", "vs seed", "vs floor", "goal"]
  const lines = rows.map((row) => [
    row.figure,
    format(row.v86box, row.unit),
    format(row.seed, row.unit),
    format(row.raw, row.unit),
    row.unit,
    ratio(row.v86box, row.seed, row.higherIsBetter),
    ratio(row.v86box, row.raw, row.higherIsBetter),
    row.goal ?? ""
  ])
  const widths = header.map((title, column) => Math.max(title.length, ...lines.map((line) => line[column]!.length)))
  const render = (cells: ReadonlyArray<string>) => `| ${cells.map((cell, column) => cell.padEnd(widths[column]!)).join(" | ")} |`
  console.log()
  console.log(render(header))
  console.log(`|${widths.map((width) => "-".repeat(width + 2)).join("|")}|`)
  for (const line of lines) console.log(render(line))
  console.log()
  console.log("Ratios: how many times better v86box is (>1× is better; latencies inverted).")
  console.log(`exec runs: ${execRuns}; stdout: ${stdoutBytes / 1e6} MB (serial baseline: ${serialBytes / 1e6} MB, it is that slow)`)
}

main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})
