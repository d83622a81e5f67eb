import { CronExpressionParser } from "cron-parser";

/**
 * The tick a schedule owes a run for: its latest tick at or before `now`, if that is later than the last one
 * run. However many ticks were missed (the machine was off), only the latest runs: one run, not one per tick.
 */
export function dueTick(cron: string, timezone: string, lastTick: string | undefined, now: Date): string | null {
  const tick = CronExpressionParser.parse(cron, { tz: timezone, currentDate: new Date(now.getTime() + 1) })
    .prev()
    .toISOString();
  if (tick === null) return null;
  return lastTick === undefined || tick > lastTick ? tick : null;
}
