// The part of uPlot 1.6.32's API the dashboard uses (static/dashboard/analytics.js), for
// `tsc --noEmit`. The module beside this file is copied from node_modules by `make`
// (Makefile: UPLOT; gitignored); its full declarations are node_modules/uplot/dist/uPlot.d.ts.

export interface Options {
  width: number;
  height: number;
  [option: string]: unknown;
}

/** x values, then one array of y values (null: a gap) per series */
export type AlignedData = [number[], ...(number | null)[][]];

export default class uPlot {
  constructor(opts: Options, data: AlignedData, target: HTMLElement);
  readonly root: HTMLElement;
  readonly width: number;
  readonly height: number;
  setData(data: AlignedData, resetScales?: boolean): void;
  setSize(size: { width: number; height: number }): void;
  destroy(): void;
}
