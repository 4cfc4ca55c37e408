// Size budgets: ≤ 2 KiB min+gzip for the core, ≤ 1 KiB for what each binding adds;
// no runtime dependencies.
import { readFileSync } from 'node:fs';
import { expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs script without types
import { BUDGETS, sizes } from '../scripts/size.mjs';

type Size = { entry: string; min: number; gzip: number; budget: number };

it.each((await sizes()) as Size[])('$entry stays within its budget min+gzip', (s: Size) => {
  expect(s.min).toBeGreaterThan(200);
  expect(s.gzip).toBeLessThanOrEqual(s.budget);
});

it('the core budget is 2 KiB, and every package entry has a budget', () => {
  expect(BUDGETS.index).toBe(2048);
  const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
  const entries = Object.keys(pkg.exports).filter((k) => k !== './package.json');
  expect(entries.map((k) => (k === '.' ? 'index' : k.slice(2))).sort()).toEqual(Object.keys(BUDGETS).sort());
});

it('has no runtime dependencies; React, Vue and axios are optional peers', () => {
  const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
  expect(pkg.dependencies ?? {}).toEqual({});
  for (const peer of ['react', 'vue', 'axios']) {
    expect(pkg.peerDependenciesMeta[peer]).toEqual({ optional: true });
  }
});
