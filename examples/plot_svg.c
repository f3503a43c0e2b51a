/* Line charts as SVG (see plot_svg.h). */
#include "plot_svg.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>

enum { WIDTH = 760, HEIGHT = 440, LEFT = 70, RIGHT = 170, TOP = 40, BOTTOM = 56 };

static const char *const PALETTE[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                      "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"};
#define N_PALETTE (int)(sizeof PALETTE / sizeof PALETTE[0])

/* A tick step of 1, 2 or 5 x 10^k giving about `target` intervals over span. */
static double nice_step(double span, int target) {
    const double raw = span / target, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
}

static bool usable(const plot_chart *c, double y) { return isfinite(y) && (!c->log2_y || y > 0); }

/* Escape the five XML special characters. */
static void put_text(FILE *f, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        case '\'': fputs("&apos;", f); break;
        default: fputc(*s, f);
        }
    }
}

int plot_svg_write(const char *path, const plot_chart *c) {
    /* data range */
    double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
    for (int s = 0; s < c->n_series; s++)
        for (int i = 0; i < c->series[s].n; i++) {
            const double x = c->series[s].x[i], y = c->series[s].y[i];
            if (!isfinite(x) || !usable(c, y)) continue;
            const double yy = c->log2_y ? log2(y) : y;
            x0 = fmin(x0, x), x1 = fmax(x1, x), y0 = fmin(y0, yy), y1 = fmax(y1, yy);
        }
    if (!(x0 <= x1)) x0 = 0, x1 = 1, y0 = 0, y1 = 1; /* no data: empty axes */
    if (x1 - x0 < 1e-12) x0 -= 0.5, x1 += 0.5;
    double ystep;
    if (c->log2_y) {
        y0 = floor(y0), y1 = ceil(y1);
        if (y1 - y0 < 1) y1 = y0 + 1;
        ystep = 1;
    } else {
        if (y1 - y0 < 1e-12) y0 -= 0.5, y1 += 0.5;
        ystep = nice_step(y1 - y0, 6);
        y0 = floor(y0 / ystep) * ystep, y1 = ceil(y1 / ystep) * ystep;
    }
    const double xstep = nice_step(x1 - x0, 8);
    const double pw = WIDTH - LEFT - RIGHT, ph = HEIGHT - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (TOP + ph - ((y) - y0) / (y1 - y0) * ph)

    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", WIDTH, HEIGHT, WIDTH, HEIGHT);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n<text x=\"%d\" y=\"24\" font-size=\"15\" "
               "font-weight=\"bold\">", LEFT);
    put_text(f, c->title);
    fputs("</text>\n", f);
    /* grid and tick labels */
    for (double t = ceil(x0 / xstep) * xstep; t <= x1 + 1e-9 * xstep; t += xstep) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", PX(t), TOP, PX(t),
                TOP + ph);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%g</text>\n", PX(t), TOP + ph + 18,
                fabs(t) < 1e-9 * xstep ? 0.0 : t);
    }
    for (double t = y0; t <= y1 + 1e-9 * ystep; t += ystep) {
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#e5e5e5\"/>\n", LEFT, PY(t),
                LEFT + pw, PY(t));
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%g</text>\n", LEFT - 6, PY(t) + 4,
                c->log2_y ? exp2(t) : fabs(t) < 1e-9 * ystep ? 0.0 : t);
    }
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#444\"/>\n", LEFT,
            TOP, pw, ph);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">", LEFT + pw / 2, HEIGHT - 14);
    put_text(f, c->x_label);
    fprintf(f, "</text>\n<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">", TOP + ph / 2);
    put_text(f, c->y_label);
    fputs("</text>\n", f);
    /* series: polylines broken at unusable points, then the legend */
    for (int s = 0; s < c->n_series; s++) {
        const plot_series *se = &c->series[s];
        const char *col = PALETTE[s % N_PALETTE];
        bool open = false;
        for (int i = 0; i < se->n; i++) {
            if (!isfinite(se->x[i]) || !usable(c, se->y[i])) {
                if (open) fputs("\"/>\n", f);
                open = false;
                continue;
            }
            if (!open)
                fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" stroke-linejoin=\"round\" "
                           "points=\"", col);
            const double yy = c->log2_y ? log2(se->y[i]) : se->y[i];
            fprintf(f, "%s%.1f,%.1f", open ? " " : "", PX(se->x[i]), PY(yy));
            open = true;
        }
        if (open) fputs("\"/>\n", f);
        if (se->n == 1 && usable(c, se->y[0]))
            fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", PX(se->x[0]),
                    PY(c->log2_y ? log2(se->y[0]) : se->y[0]), col);
        const double ly = TOP + 10 + 18.0 * s;
        fprintf(f, "<line x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>\n",
                LEFT + pw + 12, ly, LEFT + pw + 34, ly, col);
        fprintf(f, "<text x=\"%.0f\" y=\"%.1f\">", LEFT + pw + 40, ly + 4);
        put_text(f, se->name);
        fputs("</text>\n", f);
    }
    fputs("</svg>\n", f);
#undef PX
#undef PY
    const bool bad = ferror(f) != 0;
    if (fclose(f) != 0 || bad) {
        if (!errno) errno = EIO;
        return -1;
    }
    return 0;
}
