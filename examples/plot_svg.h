/* A small line-chart writer for the training examples: one SVG file per chart, no dependencies.
 *
 *   plot_series s[2] = {{"train", n, xs, ys_train}, {"test", n, xs, ys_test}};
 *   plot_chart c = {"GroupNet-S accuracy", "epoch", "accuracy (%)", s, 2, false};
 *   if (plot_svg_write("run/accuracy.svg", &c) != 0) perror(...);
 *
 * Axes get "nice" ticks (1, 2, 5 x 10^k) over the data range; with log2_y the y axis is logarithmic base 2
 * with a tick at every power of two (group counts 1, 2, 4, ... 128). Points with a non-finite y (or y <= 0
 * on a log axis) break the line. Colours come from a fixed palette in series order. */
#ifndef PLOT_SVG_H
#define PLOT_SVG_H

#include <stdbool.h>

typedef struct plot_series {
    const char *name;
    int n;
    const double *x, *y;
} plot_series;

typedef struct plot_chart {
    const char *title, *x_label, *y_label;
    const plot_series *series;
    int n_series;
    bool log2_y;
} plot_chart;

/* Write the chart to path (overwritten). Returns 0, or -1 with errno set when the file cannot be written. */
int plot_svg_write(const char *path, const plot_chart *chart);

#endif
