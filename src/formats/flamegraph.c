/* flamegraph.c - an interactive SVG flame graph of the merged call tree, root
 * at the bottom, with hover details, click-to-zoom and regex search. */
#include "formats.h"

#include <stdlib.h>
#include <string.h>

#define FG_WIDTH 1200
#define FG_PAD 10                            /* left and right margin */
#define FG_INNER (FG_WIDTH - 2 * FG_PAD)     /* width of the root box */
#define FG_FRAME_H 16                        /* row pitch; boxes are 1 px shorter */
#define FG_TOP 60                            /* title, subtitle and controls */
#define FG_BOTTOM 30                         /* details line */
#define FG_CHAR_W 7.2                        /* 12 px monospace: 0.6 em a glyph */
#define FG_MIN_PX 0.1                        /* narrower boxes are left out */
#define FG_HILITE "#e600e6"                  /* search matches; no palette uses it */

/* A distinct frame label; frames printing the same text share one so that
 * they merge (with lines off, frames differing only by line do). */
typedef struct fg_label {
    size_t off;      /* into fg.text */
    uint32_t len;
    uint32_t rank;   /* position in byte order: siblings are drawn sorted */
    uint32_t color;  /* 0xRRGGBB */
} fg_label;

typedef struct fg_node {
    uint32_t parent; /* SPP_NONE for the root */
    uint32_t label;
    uint32_t stack;  /* the first trie node merged into this one */
    uint32_t depth;
    uint64_t total;  /* samples in this node and below */
    uint64_t x;      /* samples left of this node at its depth */
} fg_node;

typedef struct fg_kid {
    uint32_t parent, rank, node;
} fg_kid;

typedef struct fg {
    const spp_profile *p;
    const spp_write_opts *opts;
    const spp_fg_style *style; /* NULL: the default look */
    char *text;          /* every raw label, back to back */
    fg_label *labels;
    uint32_t nlabels;
    uint32_t *raw_label; /* frames, then thread roots, then "all" -> label */
    fg_node *nodes;
    uint32_t nnodes;
    uint32_t *slots;     /* (parent, label) -> node, open addressing */
    uint32_t mask;
    uint32_t *kids;      /* children grouped by parent, sorted by label */
    uint32_t *kid_start; /* kids of n are kids[kid_start[n] .. kid_start[n + 1]) */
    uint64_t total;
    double scale;        /* pixels per sample */
} fg;

static uint32_t fnv32(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

static void xml_text(spp_out *o, const char *s, size_t n) { spp_out_xml(o, s, n); }

static void xml_cstr(spp_out *o, const char *s) { xml_text(o, s, strlen(s)); }

/* ---- colours ---- */

static uint32_t hsl_rgb(double h, double s, double l)
{
    double c = (1 - (2 * l - 1 < 0 ? 1 - 2 * l : 2 * l - 1)) * s;
    double hp = h / 60;
    int i = (int)hp % 6;
    double f = hp - (int)hp;
    double x = c * (i % 2 ? 1 - f : f);
    double r = 0, g = 0, b = 0;
    switch (i) {
    case 0: r = c; g = x; break;
    case 1: r = x; g = c; break;
    case 2: g = c; b = x; break;
    case 3: g = x; b = c; break;
    case 4: r = x; b = c; break;
    default: r = c; b = x; break;
    }
    double m = l - c / 2;
    uint32_t R = (uint32_t)((r + m) * 255 + 0.5), G = (uint32_t)((g + m) * 255 + 0.5),
             B = (uint32_t)((b + m) * 255 + 0.5);
    return R << 16 | G << 8 | B;
}

/* Python frames' hue families: warm to green, clear of the natives' blues,
 * the thread roots' purple and the search highlight's magenta. Adjacent
 * families are 16 degrees apart so that two modules never look alike, which
 * hashing onto one continuous range of hues allowed. */
#define FG_FAMILIES 10
#define FG_FAMILY_STEP 16.0

/* The hue follows the package (the first directory under site-packages or
 * the standard library) or else the file, so frames of one module share a
 * hue family; the name only nudges the lightness to tell neighbours apart. */
static uint32_t frame_color(const spp_profile *p, const spp_frame *f)
{
    size_t nlen, flen;
    const char *name = spp_profile_string(p, f->name, &nlen);
    const char *file = spp_profile_string(p, f->file, &flen);
    double shade = (fnv32(name, nlen) % 1000) / 1000.0;
    if (f->kind == SPP_FRAME_THREAD)
        return hsl_rgb(275, 0.35, 0.74 + 0.06 * shade);
    if (f->kind == SPP_FRAME_OTHER)
        return hsl_rgb(0, 0, 0.72);
    const char *key = file;
    size_t klen = flen;
    if (f->kind != SPP_FRAME_NATIVE) {
        const char *shown = spp_short_file(file, 0);
        if (shown != file) {
            const char *slash = strchr(shown, '/');
            key = shown;
            klen = slash ? (size_t)(slash - shown) : flen - (size_t)(shown - file);
        }
    }
    uint32_t h = fnv32(key, klen);
    if (f->kind == SPP_FRAME_NATIVE)
        return hsl_rgb(185 + 35 * ((h % 1000) / 1000.0), 0.55, 0.62 + 0.1 * shade);
    /* Neighbouring families also differ in lightness, darker and lighter in
     * turn, as 16 degrees alone is a small step among reds and oranges. */
    uint32_t family = h % FG_FAMILIES;
    double light = family % 2 ? 0.66 : 0.54;
    return hsl_rgb(FG_FAMILY_STEP * (double)family, 0.78, light + 0.1 * shade);
}

/* ---- building the merged tree ---- */

/* Writes every frame's label (and the thread roots' and the root's) into one
 * buffer, then interns them so equal text gets one label id. */
static int build_labels(fg *g)
{
    const spp_profile *p = g->p;
    uint32_t nframes = spp_profile_nframes(p), nthreads = spp_profile_nthreads(p);
    size_t nraw = (size_t)nframes + nthreads + 1;
    size_t *offs = malloc((nraw + 1) * sizeof(size_t));
    uint32_t *colors = malloc(nraw * sizeof(uint32_t));
    g->raw_label = malloc(nraw * sizeof(uint32_t));
    g->labels = malloc(nraw * sizeof(fg_label));
    if (!offs || !colors || !g->raw_label || !g->labels) {
        free(offs);
        free(colors);
        return SPP_ENOMEM;
    }

    spp_out buf;
    spp_out_open_mem(&buf);
    size_t r = 0;
    for (uint32_t i = 0; i < nframes; i++, r++) {
        const spp_frame *f = spp_profile_frame_at(p, i);
        offs[r] = buf.len;
        spp_write_label(&buf, p, f, g->opts, NULL);
        colors[r] = frame_color(p, f);
    }
    for (uint32_t i = 0; i < nthreads; i++, r++) {
        const spp_thread *t = spp_profile_thread_at(p, i);
        offs[r] = buf.len;
        if (t->name != SPP_NONE) {
            size_t n;
            const char *name = spp_profile_string(p, t->name, &n);
            spp_out_puts(&buf, "thread ");
            spp_out_write(&buf, name, n);
            spp_out_printf(&buf, " (%llu)", (unsigned long long)t->tid);
        } else {
            spp_out_printf(&buf, "thread %llu", (unsigned long long)t->tid);
        }
        spp_frame tf = {t->name, SPP_NONE, 0, 0, SPP_FRAME_THREAD};
        colors[r] = frame_color(p, &tf);
    }
    offs[r] = buf.len;
    spp_out_puts(&buf, "all");
    colors[r] = hsl_rgb(30, 0.12, 0.78);
    offs[nraw] = buf.len;
    g->text = spp_out_take(&buf, NULL);
    size_t cap = pow2_at_least(nraw * 2);
    uint32_t *set = malloc(cap * sizeof(uint32_t));
    if (!g->text || !set) {
        free(offs);
        free(colors);
        free(set);
        return SPP_ENOMEM;
    }
    memset(set, 0xff, cap * sizeof(uint32_t));

    /* The root stays a label of its own even if some frame prints "all". */
    for (r = 0; r < nraw; r++) {
        const char *s = g->text + offs[r];
        size_t n = offs[r + 1] - offs[r];
        uint32_t *slot = NULL;
        if (r + 1 < nraw) {
            size_t i = fnv32(s, n) & (cap - 1);
            for (;; i = (i + 1) & (cap - 1)) {
                uint32_t id = set[i];
                if (id == SPP_NONE || (g->labels[id].len == n &&
                                       memcmp(g->text + g->labels[id].off, s, n) == 0))
                    break;
            }
            slot = &set[i];
            if (*slot != SPP_NONE) {
                g->raw_label[r] = *slot;
                continue;
            }
        }
        uint32_t id = g->nlabels++;
        g->labels[id].off = offs[r];
        g->labels[id].len = (uint32_t)n;
        g->labels[id].rank = 0;
        g->labels[id].color = colors[r];
        g->raw_label[r] = id;
        if (slot)
            *slot = id;
    }
    free(set);
    free(offs);
    free(colors);
    return SPP_OK;
}

typedef struct fg_sortkey {
    const char *s;
    size_t len;
    uint32_t id;
} fg_sortkey;

static int cmp_sortkey(const void *a, const void *b)
{
    const fg_sortkey *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c)
        return c;
    return x->len < y->len ? -1 : x->len > y->len;
}

/* Siblings are drawn in label order, like flamegraph.pl's sorted folded
 * stacks: the picture then does not depend on the order samples arrived. */
static int rank_labels(fg *g)
{
    fg_sortkey *keys = malloc((size_t)g->nlabels * sizeof(fg_sortkey));
    if (!keys)
        return SPP_ENOMEM;
    for (uint32_t i = 0; i < g->nlabels; i++) {
        keys[i].s = g->text + g->labels[i].off;
        keys[i].len = g->labels[i].len;
        keys[i].id = i;
    }
    qsort(keys, g->nlabels, sizeof(fg_sortkey), cmp_sortkey);
    for (uint32_t i = 0; i < g->nlabels; i++)
        g->labels[keys[i].id].rank = i;
    free(keys);
    return SPP_OK;
}

static uint32_t child(fg *g, uint32_t parent, uint32_t label)
{
    uint32_t i = (uint32_t)((((uint64_t)parent * 0x9e3779b97f4a7c15ull) ^ label * 0x85ebca6bu) >> 17) &
                 g->mask;
    for (;; i = (i + 1) & g->mask) {
        uint32_t id = g->slots[i];
        if (id == SPP_NONE)
            break;
        if (g->nodes[id].parent == parent && g->nodes[id].label == label)
            return id;
    }
    uint32_t id = g->nnodes++;
    g->nodes[id].parent = parent;
    g->nodes[id].label = label;
    g->nodes[id].depth = g->nodes[parent].depth + 1;
    g->nodes[id].stack = SPP_NONE;
    g->nodes[id].total = 0;
    g->nodes[id].x = 0;
    g->slots[i] = id;
    return id;
}

/* Maps every trie node to a merged node. A trie node is created after its
 * parent, so one pass in id order always finds the parent mapped, and merged
 * nodes too get ids above their parents'. */
static int build_tree(fg *g)
{
    const spp_profile *p = g->p;
    uint32_t nstacks = spp_profile_nstacks(p), nframes = spp_profile_nframes(p);
    size_t maxnodes = (size_t)nstacks + 1;
    size_t cap = pow2_at_least(maxnodes * 2);
    g->nodes = malloc(maxnodes * sizeof(fg_node));
    g->slots = malloc(cap * sizeof(uint32_t));
    uint32_t *map = malloc((nstacks ? nstacks : 1) * sizeof(uint32_t));
    if (!g->nodes || !g->slots || !map) {
        free(map);
        return SPP_ENOMEM;
    }
    memset(g->slots, 0xff, cap * sizeof(uint32_t));
    g->mask = (uint32_t)(cap - 1);
    uint32_t all = g->raw_label[(size_t)nframes + spp_profile_nthreads(p)];
    g->nodes[0] = (fg_node){SPP_NONE, all, SPP_NONE, 0, 0, 0};
    g->nnodes = 1;

    for (uint32_t s = 0; s < nstacks; s++) {
        const spp_stack *st = spp_profile_stack_at(p, s);
        uint32_t n;
        if (st->parent == SPP_NONE)
            n = g->opts->thread_roots ? child(g, 0, g->raw_label[(size_t)nframes + st->thread]) : 0;
        else
            n = child(g, map[st->parent], g->raw_label[st->frame]);
        map[s] = n;
        if (g->nodes[n].stack == SPP_NONE)
            g->nodes[n].stack = s;
        g->nodes[n].total += st->self_count;
    }
    free(map);
    for (uint32_t n = g->nnodes; n-- > 1;)
        g->nodes[g->nodes[n].parent].total += g->nodes[n].total;
    g->total = g->nodes[0].total;
    return SPP_OK;
}

static int cmp_kid(const void *a, const void *b)
{
    const fg_kid *x = a, *y = b;
    if (x->parent != y->parent)
        return x->parent < y->parent ? -1 : 1;
    return x->rank < y->rank ? -1 : x->rank > y->rank;
}

/* Sorts the children and places every node: a child starts where its
 * previous sibling ends, the first child where its parent starts. */
static int layout(fg *g)
{
    uint32_t nk = g->nnodes - 1;
    fg_kid *k = malloc((nk ? nk : 1) * sizeof(fg_kid));
    g->kids = malloc((nk ? nk : 1) * sizeof(uint32_t));
    g->kid_start = calloc((size_t)g->nnodes + 1, sizeof(uint32_t));
    if (!k || !g->kids || !g->kid_start) {
        free(k);
        return SPP_ENOMEM;
    }
    for (uint32_t n = 1; n < g->nnodes; n++) {
        k[n - 1].parent = g->nodes[n].parent;
        k[n - 1].rank = g->labels[g->nodes[n].label].rank;
        k[n - 1].node = n;
        g->kid_start[g->nodes[n].parent + 1]++;
    }
    for (uint32_t n = 0; n < g->nnodes; n++)
        g->kid_start[n + 1] += g->kid_start[n];
    qsort(k, nk, sizeof(fg_kid), cmp_kid);
    /* Groups come in parent order and parents have smaller ids than their
     * children, so a parent is placed before its own group is reached. */
    uint64_t cursor = 0;
    for (uint32_t i = 0; i < nk; i++) {
        fg_node *n = &g->nodes[k[i].node];
        if (i == 0 || k[i].parent != k[i - 1].parent)
            cursor = g->nodes[k[i].parent].x;
        n->x = cursor;
        cursor += n->total;
        g->kids[i] = k[i].node;
    }
    free(k);
    return SPP_OK;
}

/* ---- writing ---- */

static int kept(const fg *g, uint32_t n) { return (double)g->nodes[n].total * g->scale >= FG_MIN_PX; }

/* Writes the label cut to what fits in w pixels ("abcd.." when cut); the
 * script's fit() uses the same rule when zooming changes the widths. */
static void write_fitted(spp_out *o, const char *s, size_t n, double w)
{
    double room = (w - 6) / FG_CHAR_W;
    if (room < 3)
        return;
    if (!(room < (double)n + 3)) {
        xml_text(o, s, n); /* fits whole (and room, which a garbled
                            * profile can make huge or NaN, is not cast) */
        return;
    }
    size_t max = (size_t)room, keep = max - 2, chars = 0, cut = 0;
    for (size_t i = 0; i < n; i++) {
        if (((unsigned char)s[i] & 0xc0) == 0x80)
            continue;   /* continuation byte: same character */
        if (chars == keep)
            cut = i;
        if (++chars > max) {
            xml_text(o, s, cut);
            spp_out_puts(o, "..");
            return;
        }
    }
    xml_text(o, s, n);
}

static void write_box(spp_out *o, const fg *g, uint32_t id, long long height)
{
    const fg_node *n = &g->nodes[id];
    const fg_label *l = &g->labels[n->label];
    const char *s = g->text + l->off;
    double x = FG_PAD + (double)n->x * g->scale, w = (double)n->total * g->scale;
    long long y = height - FG_BOTTOM - ((long long)n->depth + 1) * FG_FRAME_H;
    char buf[320];
    int k = snprintf(buf, sizeof(buf),
                     "<g class=\"frame\" data-x=\"%llu\" data-n=\"%llu\" data-d=\"%u\"><title>",
                     (unsigned long long)n->x, (unsigned long long)n->total, n->depth);
    if (k > 0)
        spp_out_write(o, buf, (size_t)k);
    xml_text(o, s, l->len);
    const spp_fg_style *st = g->style;
    uint32_t color = st && st->color ? st->color(st->ctx, n->stack) : l->color;
    if (st && st->details) {
        char details[200];
        details[0] = '\0';
        st->details(st->ctx, n->stack, details, sizeof(details));
        spp_out_puts(o, " (");
        xml_cstr(o, details);
        spp_out_puts(o, ")");
    } else {
        k = snprintf(buf, sizeof(buf), " (%llu samples, %.2f%%)", (unsigned long long)n->total,
                     (double)n->total * 100.0 / (double)g->total);
        if (k > 0)
            spp_out_write(o, buf, (size_t)k);
    }
    k = snprintf(buf, sizeof(buf),
                 "</title><rect x=\"%.2f\" y=\"%lld\" width=\"%.2f\" "
                 "height=\"%d\" fill=\"#%06x\"/><text x=\"%.2f\" y=\"%lld\">",
                 x, y, w, FG_FRAME_H - 1, (unsigned)color, x + 3, y + 11);
    if (k > 0)
        spp_out_write(o, buf, (size_t)k);
    write_fitted(o, s, l->len, w);
    spp_out_puts(o, "</text></g>\n");
}

/* Pre-order, children in label order, with an explicit stack: call trees can
 * be thousands of frames deep. */
static int write_boxes(spp_out *o, const fg *g, long long height)
{
    uint32_t *todo = malloc((size_t)g->nnodes * sizeof(uint32_t));
    if (!todo)
        return SPP_ENOMEM;
    size_t top = 0;
    todo[top++] = 0;
    while (top) {
        uint32_t n = todo[--top];
        write_box(o, g, n, height);
        for (uint32_t i = g->kid_start[n + 1]; i-- > g->kid_start[n];)
            if (kept(g, g->kids[i]))
                todo[top++] = g->kids[i];
    }
    free(todo);
    return SPP_OK;
}

static const char fg_style[] =
    "<style type=\"text/css\">\n"
    "text { font-family: \"DejaVu Sans Mono\", Menlo, Consolas, monospace; font-size: 12px; fill: #000; }\n"
    "#title, #subtitle { font-family: Verdana, \"DejaVu Sans\", sans-serif; text-anchor: middle; }\n"
    "#title { font-size: 17px; }\n"
    "#subtitle { fill: #444; }\n"
    "#unzoom, #search { cursor: pointer; }\n"
    "#unzoom.off { opacity: 0.35; cursor: default; }\n"
    "#search.on { fill: " FG_HILITE "; }\n"
    "#search, #matched { text-anchor: end; }\n"
    ".frame { cursor: pointer; }\n"
    ".frame text { pointer-events: none; }\n"
    ".frame:hover rect { stroke: #000; stroke-width: 0.5; }\n"
    ".dim { opacity: 0.5; }\n"
    ".hide { display: none; }\n"
    "</style>\n";

/* Everything the script needs is read from the DOM, where names are escaped
 * text; nothing from the profile is ever written inside this CDATA section. */
static const char *const fg_script[] = {
    "(function () {\n"
    "'use strict';\n"
    "var frames = null, byElem = null, box, details, unzoomBtn, searchBtn, matched;\n"
    "var term = null;\n",
    "\n"
    "/* The frame objects are built on the first zoom or search, not at load:\n"
    "   big graphs have a hundred thousand boxes and most views need none. */\n"
    "function all() {\n"
    "  if (frames) return frames;\n"
    "  frames = [];\n"
    "  byElem = new Map();\n"
    "  var gs = box.getElementsByClassName('frame');\n"
    "  for (var i = 0; i < gs.length; i++) {\n"
    "    var g = gs[i], rect = g.getElementsByTagName('rect')[0], text = g.getElementsByTagName('text')[0];\n"
    "    var f = { g: g, rect: rect, text: text, title: g.getElementsByTagName('title')[0],\n"
    "      x: Number(g.getAttribute('data-x')), n: Number(g.getAttribute('data-n')),\n"
    "      d: Number(g.getAttribute('data-d')), fill: rect.getAttribute('fill'),\n"
    "      ox: rect.getAttribute('x'), ow: rect.getAttribute('width'), tx: text.getAttribute('x'),\n"
    "      tt: text.textContent, label: null, chars: null, state: 0, moved: false, hit: false };\n"
    "    frames.push(f);\n"
    "    byElem.set(g, f);\n"
    "  }\n"
    "  return frames;\n"
    "}\n",
    "\n"
    "function label(f) {\n"
    "  if (f.label === null) {\n"
    "    var t = f.title.textContent, m = /^([\\s\\S]*) \\([^()]*\\)$/.exec(t);\n"
    "    f.label = m ? m[1] : t;\n"
    "  }\n"
    "  return f.label;\n"
    "}\n",
    "\n"
    "/* Same rule as the writer: as many characters as fit, \"..\" when cut. */\n"
    "function fit(f, w) {\n"
    "  var room = (w - 6) / CW, s = '';\n"
    "  if (room >= 3) {\n"
    "    var max = Math.floor(room);\n"
    "    if (f.chars === null) f.chars = Array.from(label(f));\n"
    "    s = f.chars.length <= max ? f.label : f.chars.slice(0, max - 2).join('') + '..';\n"
    "  }\n"
    "  if (f.text.textContent !== s) f.text.textContent = s;\n"
    "}\n",
    "\n"
    "function place(f, x, w) {\n"
    "  f.rect.setAttribute('x', x.toFixed(2));\n"
    "  f.rect.setAttribute('width', w.toFixed(2));\n"
    "  f.text.setAttribute('x', (x + 3).toFixed(2));\n"
    "  fit(f, w);\n"
    "  f.moved = true;\n"
    "}\n",
    "\n"
    "var STATES = ['frame', 'frame dim', 'frame hide'];\n"
    "function setState(f, s) {\n"
    "  if (f.state !== s) { f.g.setAttribute('class', STATES[s]); f.state = s; }\n"
    "}\n",
    "\n"
    "function unzoom() {\n"
    "  var fs = all();\n"
    "  for (var i = 0; i < fs.length; i++) {\n"
    "    var f = fs[i];\n"
    "    setState(f, 0);\n"
    "    if (f.moved) {\n"
    "      f.rect.setAttribute('x', f.ox);\n"
    "      f.rect.setAttribute('width', f.ow);\n"
    "      f.text.setAttribute('x', f.tx);\n"
    "      f.text.textContent = f.tt;\n"
    "      f.moved = false;\n"
    "    }\n"
    "  }\n"
    "  unzoomBtn.setAttribute('class', 'off');\n"
    "}\n",
    "\n"
    "/* Boxes nest or are disjoint, so the box's ancestors are the lower boxes\n"
    "   spanning it and its descendants the higher boxes inside it. */\n"
    "function zoom(z) {\n"
    "  if (z.d === 0) { unzoom(); return; }\n"
    "  var fs = all(), ratio = W / z.n, end = z.x + z.n;\n"
    "  for (var i = 0; i < fs.length; i++) {\n"
    "    var f = fs[i];\n"
    "    if (f.d < z.d && f.x <= z.x && f.x + f.n >= end) {\n"
    "      setState(f, 1);\n"
    "      place(f, PAD, W);\n"
    "    } else if (f.d >= z.d && f.x >= z.x && f.x + f.n <= end) {\n"
    "      setState(f, 0);\n"
    "      place(f, PAD + (f.x - z.x) * ratio, f.n * ratio);\n"
    "    } else {\n"
    "      setState(f, 2);\n"
    "    }\n"
    "  }\n"
    "  unzoomBtn.setAttribute('class', '');\n"
    "}\n",
    "\n"
    "function highlight(f, hit) {\n"
    "  if (f.hit !== hit) { f.rect.setAttribute('fill', hit ? HILITE : f.fill); f.hit = hit; }\n"
    "}\n",
    "\n"
    "function clearSearch() {\n"
    "  term = null;\n"
    "  if (frames) for (var i = 0; i < frames.length; i++) highlight(frames[i], false);\n"
    "  matched.textContent = '';\n"
    "  searchBtn.setAttribute('class', '');\n"
    "}\n",
    "\n"
    "function search(t) {\n"
    "  var re;\n"
    "  try { re = new RegExp(t); }\n"
    "  catch (e) { re = new RegExp(t.replace(/[.*+?^${}()|[\\]\\\\]/g, '\\\\$&')); }\n"
    "  term = t;\n"
    "  var fs = all(), hits = [];\n"
    "  for (var i = 0; i < fs.length; i++) {\n"
    "    var hit = re.test(label(fs[i]));\n"
    "    highlight(fs[i], hit);\n"
    "    if (hit) hits.push(fs[i]);\n"
    "  }\n"
    "  /* In x order, a hit starting before the end of the last counted one lies\n"
    "     inside it: its samples are already counted. */\n"
    "  hits.sort(function (a, b) { return a.x - b.x || b.n - a.n; });\n"
    "  var sum = 0, end = -1;\n"
    "  for (var j = 0; j < hits.length; j++)\n"
    "    if (hits[j].x >= end) { sum += hits[j].n; end = hits[j].x + hits[j].n; }\n"
    "  matched.textContent = 'Matched: ' + (TOTAL ? 100 * sum / TOTAL : 0).toFixed(2) + '%';\n"
    "  searchBtn.setAttribute('class', 'on');\n"
    "}\n",
    "\n"
    "function askSearch() {\n"
    "  var t = window.prompt('Search for (regular expression):', term === null ? '' : term);\n"
    "  if (t === null) return;\n"
    "  if (t === '') clearSearch(); else search(t);\n"
    "}\n",
    "\n"
    "function frameElem(e) {\n"
    "  for (var n = e.target; n && n !== box; n = n.parentNode)\n"
    "    if (n.getAttribute && /(^| )frame( |$)/.test(n.getAttribute('class') || '')) return n;\n"
    "  return null;\n"
    "}\n",
    "\n"
    "function init() {\n"
    "  box = document.getElementById('frames');\n"
    "  details = document.getElementById('details');\n"
    "  unzoomBtn = document.getElementById('unzoom');\n"
    "  searchBtn = document.getElementById('search');\n"
    "  matched = document.getElementById('matched');\n"
    "  box.addEventListener('mouseover', function (e) {\n"
    "    var g = frameElem(e);\n"
    "    if (g) details.textContent = g.getElementsByTagName('title')[0].textContent;\n"
    "  });\n"
    "  box.addEventListener('mouseout', function (e) {\n"
    "    if (frameElem(e)) details.textContent = ' ';\n"
    "  });\n"
    "  box.addEventListener('click', function (e) {\n"
    "    var g = frameElem(e);\n"
    "    if (g) { all(); zoom(byElem.get(g)); }\n"
    "  });\n"
    "  unzoomBtn.addEventListener('click', unzoom);\n"
    "  searchBtn.addEventListener('click', askSearch);\n"
    "  window.addEventListener('keydown', function (e) {\n"
    "    if ((e.ctrlKey || e.metaKey) && (e.key === 'f' || e.key === 'F')) {\n"
    "      e.preventDefault();\n"
    "      askSearch();\n"
    "    } else if (e.key === 'Escape') {\n"
    "      clearSearch();\n"
    "    }\n"
    "  });\n"
    "}\n",
    "\n"
    "if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);\n"
    "else init();\n"
    "})();\n",
    NULL,
};

static void write_subtitle(spp_out *o, const fg *g, uint64_t total)
{
    const spp_profile *p = g->p;
    const spp_meta *m = spp_profile_meta(p);
    spp_out_printf(o, "<text id=\"subtitle\" x=\"%d\" y=\"44\">", FG_WIDTH / 2);
    if (g->style && g->style->subtitle) {
        xml_cstr(o, g->style->subtitle);
        spp_out_puts(o, "</text>\n");
        return;
    }
    if (m->end_ns > m->start_ns) {
        double secs = (double)(m->end_ns - m->start_ns) / 1e9;
        spp_out_printf(o, "Duration %.2f s, %llu samples, %.1f samples/s", secs,
                       (unsigned long long)total, (double)total / secs);
    } else {
        spp_out_printf(o, "%llu samples", (unsigned long long)total);
    }
    if (m->interval_ms > 0)
        spp_out_printf(o, " (interval %g ms)", m->interval_ms);
    if (spp_profile_dropped(p))
        spp_out_printf(o, ", %llu dropped", (unsigned long long)spp_profile_dropped(p));
    if (m->clock) {
        spp_out_puts(o, ", ");
        xml_cstr(o, m->clock);
        spp_out_puts(o, " time");
    }
    if (m->mechanism) {
        spp_out_puts(o, " via ");
        xml_cstr(o, m->mechanism);
    }
    spp_out_puts(o, "</text>\n");
}

static void write_document(spp_out *o, const fg *g, long long height)
{
    const spp_meta *m = spp_profile_meta(g->p);
    spp_out_puts(o, "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"no\"?>\n");
    spp_out_printf(o,
                   "<svg version=\"1.1\" width=\"%d\" height=\"%lld\" viewBox=\"0 0 %d %lld\" "
                   "xmlns=\"http://www.w3.org/2000/svg\">\n",
                   FG_WIDTH, height, FG_WIDTH, height);
    spp_out_puts(o, "<defs><linearGradient id=\"background\" x1=\"0\" y1=\"0\" x2=\"0\" y2=\"1\">"
                    "<stop stop-color=\"#eeeeee\" offset=\"5%\"/>"
                    "<stop stop-color=\"#eeeeb0\" offset=\"95%\"/></linearGradient></defs>\n");
    spp_out_puts(o, fg_style);
    spp_out_puts(o, "<rect x=\"0\" y=\"0\" width=\"100%\" height=\"100%\" fill=\"url(#background)\"/>\n");
    spp_out_printf(o, "<text id=\"title\" x=\"%d\" y=\"24\">", FG_WIDTH / 2);
    xml_cstr(o, m->title && m->title[0] ? m->title : "spprof");
    spp_out_puts(o, "</text>\n");
    write_subtitle(o, g, g->total);
    spp_out_printf(o, "<text id=\"unzoom\" class=\"off\" x=\"%d\" y=\"24\">Reset Zoom</text>\n", FG_PAD);
    spp_out_printf(o, "<text id=\"search\" x=\"%d\" y=\"24\">Search</text>\n", FG_WIDTH - FG_PAD);
    spp_out_printf(o, "<text id=\"details\" x=\"%d\" y=\"%lld\"> </text>\n", FG_PAD, height - 12);
    spp_out_printf(o, "<text id=\"matched\" x=\"%d\" y=\"%lld\"></text>\n", FG_WIDTH - FG_PAD,
                   height - 12);
}

static void write_script(spp_out *o, const fg *g)
{
    spp_out_puts(o, "<script type=\"text/ecmascript\"><![CDATA[\n");
    spp_out_printf(o, "var W = %d, PAD = %d, CW = %g, TOTAL = %llu, HILITE = '%s';\n", FG_INNER,
                   FG_PAD, FG_CHAR_W, (unsigned long long)g->total, FG_HILITE);
    for (size_t i = 0; fg_script[i]; i++)
        spp_out_puts(o, fg_script[i]);
    spp_out_puts(o, "]]></script>\n");
}

/* The folded stacks, for spprof diff to read back (read.c). */
static int write_stacks(spp_out *o, const fg *g)
{
    if (g->style && g->style->no_stacks)
        return SPP_OK;
    spp_out buf;
    spp_out_open_mem(&buf);
    int rc = spp_write_collapsed(g->p, &buf, g->opts);
    size_t n;
    char *text = spp_out_take(&buf, &n);
    if (rc < 0 || !text) {
        free(text);
        return rc < 0 ? rc : SPP_ENOMEM;
    }
    spp_out_puts(o, "<metadata id=\"spprof-folded\">\n");
    xml_text(o, text, n);
    spp_out_puts(o, "</metadata>\n");
    free(text);
    return SPP_OK;
}

static int write_flamegraph(fg *g, spp_out *o)
{
    int rc;
    if ((rc = build_labels(g)) < 0 || (rc = rank_labels(g)) < 0 || (rc = build_tree(g)) < 0 ||
        (rc = layout(g)) < 0)
        return rc;
    if (!g->total) {
        long long height = FG_TOP + 100;
        write_document(o, g, height);
        spp_out_printf(o, "<g id=\"frames\"></g>\n<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">"
                       "no samples</text>\n", FG_WIDTH / 2, FG_TOP + 40);
        write_script(o, g);
        if ((rc = write_stacks(o, g)) < 0)
            return rc;
        spp_out_puts(o, "</svg>\n");
        return SPP_OK;
    }
    g->scale = (double)FG_INNER / (double)g->total;
    uint32_t maxdepth = 0;
    for (uint32_t n = 0; n < g->nnodes; n++)
        if (g->nodes[n].depth > maxdepth && kept(g, n))
            maxdepth = g->nodes[n].depth;
    long long height = FG_TOP + ((long long)maxdepth + 1) * FG_FRAME_H + FG_BOTTOM;
    write_document(o, g, height);
    spp_out_puts(o, "<g id=\"frames\">\n");
    if ((rc = write_boxes(o, g, height)) < 0)
        return rc;
    spp_out_puts(o, "</g>\n");
    write_script(o, g);
    if ((rc = write_stacks(o, g)) < 0)
        return rc;
    spp_out_puts(o, "</svg>\n");
    return SPP_OK;
}

int spp_write_flamegraph(const spp_profile *p, spp_out *o, const spp_write_opts *opts)
{
    return spp_write_flamegraph_styled(p, o, opts, NULL);
}

int spp_write_flamegraph_styled(const spp_profile *p, spp_out *o, const spp_write_opts *opts,
                                const spp_fg_style *style)
{
    if (!p || !o || !opts)
        return SPP_EINVAL;
    fg g;
    memset(&g, 0, sizeof(g));
    g.p = p;
    g.opts = opts;
    g.style = style;
    int rc = write_flamegraph(&g, o);
    free(g.text);
    free(g.labels);
    free(g.raw_label);
    free(g.nodes);
    free(g.slots);
    free(g.kids);
    free(g.kid_start);
    return rc;
}
