/*
 * Writes the exposition lines of decoded statistics pages: the numbers, in the spelling
 * Python's renderer (ebs_exporter/render.py) gives them. Every name, label and `le` text is
 * prepared by Python from the metric table and handed in; nothing here knows a metric.
 * Also the exporter's other per-page loop: making the 32-bit bin counts monotonic.
 */
#include "nvme_ebs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct writer {
    char *p;
    char *end;
    size_t needed;
};

static void put(struct writer *w, const char *s, size_t n)
{
    if ((size_t)(w->end - w->p) >= n) {
        memcpy(w->p, s, n);
        w->p += n;
    } else {
        w->end = w->p; /* out of room: from here on only count */
    }
    w->needed += n;
}

static void put_text(struct writer *w, struct nvme_ebs_text t)
{
    put(w, t.ptr, t.len);
}

/* Decimal digits of v into buf (no terminator); returns their number. */
static int u64_digits(uint64_t v, char *buf)
{
    char tmp[20];
    int n = 0, i;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    return n;
}

static void put_u64(struct writer *w, uint64_t v)
{
    char buf[20];

    put(w, buf, (size_t)u64_digits(v, buf));
}

/*
 * Python's repr() of a float from its shortest digits (no trailing zeros) and decimal point
 * position (value = 0.DIGITS x 10^decpt): fixed notation for -4 < decpt <= 16, else exponent.
 */
static void put_repr(struct writer *w, const char *digits, int nd, int decpt)
{
    char buf[48];
    int n = 0, i, e;

    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            buf[n++] = '0';
            buf[n++] = '.';
            for (i = 0; i < -decpt; i++)
                buf[n++] = '0';
            memcpy(buf + n, digits, (size_t)nd);
            n += nd;
        } else if (decpt >= nd) {
            memcpy(buf + n, digits, (size_t)nd);
            n += nd;
            for (i = nd; i < decpt; i++)
                buf[n++] = '0';
            buf[n++] = '.';
            buf[n++] = '0';
        } else {
            memcpy(buf + n, digits, (size_t)decpt);
            n += decpt;
            buf[n++] = '.';
            memcpy(buf + n, digits + decpt, (size_t)(nd - decpt));
            n += nd - decpt;
        }
    } else {
        buf[n++] = digits[0];
        if (nd > 1) {
            buf[n++] = '.';
            memcpy(buf + n, digits + 1, (size_t)(nd - 1));
            n += nd - 1;
        }
        e = decpt - 1;
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
    }
    put(w, buf, (size_t)n);
}

/* v / d correctly rounded to a double (ties to even), as Python's int / int is. */
static double divide_rounded(uint64_t v, uint64_t d)
{
    unsigned __int128 n, q, r;
    int s = 0;

    if (v == 0)
        return 0.0;
    if (v / d >= ((uint64_t)1 << 53)) { /* large quotient: round the integer part, r is sticky */
        uint64_t qi = v / d, ri = v % d, m, rest, half;
        int shift = 0;

        while ((qi >> shift) >= ((uint64_t)1 << 53))
            shift++;
        m = qi >> shift;
        rest = qi & (((uint64_t)1 << shift) - 1);
        half = (uint64_t)1 << (shift - 1);
        if (rest > half || (rest == half && (ri != 0 || (m & 1))))
            m++;
        return ldexp((double)m, shift);
    }
    n = v;
    while ((n << 1) / d < ((unsigned __int128)1 << 53)) { /* scale until 53 significant bits */
        n <<= 1;
        s++;
    }
    if (n / d < ((unsigned __int128)1 << 52)) {
        n <<= 1;
        s++;
    }
    q = n / d;
    r = n % d;
    if (2 * r > d || (2 * r == d && (q & 1)))
        q++;
    return ldexp((double)(uint64_t)q, -s);
}

/* repr(v / d) in Python, for d a power of ten (10^k, k <= 19). */
static void put_scaled(struct writer *w, uint64_t v, uint64_t d, int k)
{
    char digits[32];
    int nd, t = 0, p, decpt;

    if (v < 1000000000000000ULL) {
        /* At most 15 significant digits: the exact decimal is the shortest that round-trips. */
        if (v == 0) {
            put(w, "0.0", 3);
            return;
        }
        while (v % 10 == 0) {
            v /= 10;
            t++;
        }
        nd = u64_digits(v, digits);
        put_repr(w, digits, nd, nd + t - k);
        return;
    }
    {
        /* Rare (v >= 10^15): the fewest digits that read back as the same double. */
        double x = divide_rounded(v, d);
        char text[40];
        char *e;

        for (p = 1; p <= 17; p++) {
            snprintf(text, sizeof(text), "%.*e", p - 1, x);
            if (strtod(text, NULL) == x)
                break;
        }
        e = strchr(text, 'e');
        nd = 0;
        for (char *c = text; c < e; c++)
            if (*c >= '0' && *c <= '9')
                digits[nd++] = *c;
        while (nd > 1 && digits[nd - 1] == '0')
            nd--;
        decpt = atoi(e + 1) + 1;
        put_repr(w, digits, nd, decpt);
    }
}

static uint64_t field_u64(const struct nvme_ebs_stats *s, size_t offset)
{
    uint64_t v;

    memcpy(&v, (const char *)s + offset, sizeof(v));
    return v;
}

static void put_value(struct writer *w, const struct nvme_ebs_family_text *f, uint64_t v)
{
    if (f->scale_digits < 0)
        put_u64(w, v);
    else
        put_scaled(w, v, f->scale, f->scale_digits);
}

static void put_histogram(struct writer *w, const struct nvme_ebs_family_text *f,
                          const struct nvme_ebs_volume_text *vol)
{
    const struct nvme_ebs_histogram *h =
        (const struct nvme_ebs_histogram *)(const void *)((const char *)vol->stats + f->histogram_offset);
    const struct nvme_ebs_layout *layout = vol->layout[f->slot];
    const uint64_t *offsets = vol->offsets[f->slot];
    uint64_t cumulative[NVME_EBS_MAX_BINS], total = 0;
    size_t i, bins = h->num_bins <= NVME_EBS_MAX_BINS ? (size_t)h->num_bins : NVME_EBS_MAX_BINS;

    for (i = 0; i < bins; i++) {
        total += h->count[i] + (offsets ? offsets[i] : 0);
        cumulative[i] = total;
    }
    for (i = 0; i < layout->buckets; i++) {
        put_text(w, f->bucket);
        put_text(w, vol->labels);
        put_text(w, layout->le[i]);
        put_u64(w, layout->index[i] < bins ? cumulative[layout->index[i]] : total);
        put(w, "\n", 1);
    }
    if (layout->inf) {
        put_text(w, f->bucket);
        put_text(w, vol->labels);
        put_text(w, layout->le[layout->buckets]);
        put_u64(w, total);
        put(w, "\n", 1);
    }
    put_text(w, f->count);
    put_text(w, vol->labels);
    put(w, "} ", 2);
    put_u64(w, total);
    put(w, "\n", 1);
    put_text(w, f->sum);
    put_text(w, vol->labels);
    put(w, "} ", 2);
    put_value(w, f, field_u64(vol->stats, f->value_offset));
    put(w, "\n", 1);
}

/* One piece of a family: its header (vol NULL), or the line(s) of one volume. */
static void put_piece(struct writer *w, const struct nvme_ebs_family_text *family,
                      const struct nvme_ebs_volume_text *vol)
{
    if (!vol) {
        put_text(w, family->header);
    } else if (family->histogram) {
        put_histogram(w, family, vol);
    } else {
        put_text(w, family->name);
        put_text(w, vol->labels);
        put(w, "} ", 2);
        put_value(w, family, field_u64(vol->stats, family->value_offset));
        put(w, "\n", 1);
    }
}

size_t nvme_ebs_render_next(char *out, size_t cap, const struct nvme_ebs_family_text *families, size_t nfamilies,
                            const struct nvme_ebs_volume_text *volumes, size_t n, struct nvme_ebs_render_pos *pos)
{
    struct writer w = {out, out + cap, 0};

    pos->needed = 0;
    while (pos->family < nfamilies) {
        char *start = w.p;
        size_t before = w.needed;

        if (pos->piece > n) { /* a position handed in past the volumes: go on with the next family */
            pos->family++, pos->piece = 0;
            continue;
        }
        put_piece(&w, &families[pos->family], pos->piece ? &volumes[pos->piece - 1] : NULL);
        if (w.needed - before != (size_t)(w.p - start)) { /* did not fit: left for the next call */
            if (start == out)
                pos->needed = w.needed - before;
            return (size_t)(start - out);
        }
        if (++pos->piece > n)
            pos->family++, pos->piece = 0;
    }
    return (size_t)(w.p - out);
}

int nvme_ebs_unwrap(const struct nvme_ebs_stats *now, size_t histogram_offset, uint32_t *last, uint64_t *offsets)
{
    const struct nvme_ebs_histogram *h = (const void *)((const char *)now + histogram_offset);
    size_t i, n = h->num_bins <= NVME_EBS_MAX_BINS ? (size_t)h->num_bins : NVME_EBS_MAX_BINS;
    int wrapped = 0;

    for (i = 0; i < n; i++) {
        if (h->count[i] < last[i]) {
            offsets[i] += (uint64_t)1 << 32;
            wrapped = 1;
        }
        last[i] = h->count[i];
    }
    return wrapped;
}
