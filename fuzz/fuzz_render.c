/*
 * libFuzzer target for the exposition renderer (csrc/render.c): the input is read as a
 * recipe for everything the renderer takes from Python and from a decoded page, including
 * what the Python side never hands it (num_bins past 64, bucket indices past the bins,
 * empty texts), so that no input can make it read or write out of bounds.
 *
 *   byte 0      bits 0-1: the family (integer scalar, scaled scalar, histogram, histogram
 *               without +Inf); bits 2-6: the scale's power of ten (0-19, above: 19)
 *   byte 1      num_bins (any value: the renderer clamps at 64)
 *   byte 2      buckets served (0-64), byte 3 bit 0: wrap offsets follow
 *   then        the page's 11 counters (8 bytes each), the counts (4 bytes each), the bucket
 *               indices (1 byte each), the offsets (8 bytes each), the labels (the rest)
 *
 * Checks: the text is written in whole pieces within the buffer at every capacity tried (each
 * piece's own size, the whole text's, one short, half), the pieces join into the same text
 * whatever the capacity, a call writes nothing only when its next piece is larger than the
 * buffer, and every number it writes reads back as the value it stands for. The
 * page's counts against the same counts reversed go through nvme_ebs_unwrap, checked bin by
 * bin.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "reference.h"

struct recipe {
    const uint8_t *p;
    size_t left;
};

static uint64_t take(struct recipe *r, unsigned bytes)
{
    uint64_t v = 0;
    unsigned i;

    for (i = 0; i < bytes && r->left; i++, r->left--)
        v |= (uint64_t)*r->p++ << (8 * i);
    return v;
}

#define UNWRITTEN 0xA5

/*
 * The whole text, written in pieces through a heap buffer of exactly `cap` bytes (ASan catches
 * a byte past it), which grows only to a piece that does not fit; the pieces joined into *text.
 * Returns the text's length; *calls counts the calls that wrote something.
 */
static size_t render(const struct nvme_ebs_family_text *f, const struct nvme_ebs_volume_text *v, size_t cap,
                     char **text, size_t *calls)
{
    struct nvme_ebs_render_pos pos = {0, 0, 0};
    char *buf = malloc(cap ? cap : 1), *all = NULL;
    size_t len = 0;

    *calls = 0;
    while (pos.family < 1) {
        size_t written;

        memset(buf, UNWRITTEN, cap ? cap : 1);
        written = nvme_ebs_render_next(buf, cap, f, 1, v, 1, &pos);
        if (written) {
            REQUIRE(written <= cap);
            all = realloc(all, len + written);
            REQUIRE(all != NULL);
            memcpy(all + len, buf, written);
            len += written;
            ++*calls;
        } else {
            REQUIRE(pos.family < 1 && pos.needed > cap); /* only a piece too large stops a call */
            free(buf);
            cap = pos.needed;
            buf = malloc(cap);
        }
    }
    free(buf);
    *text = all ? all : malloc(1);
    return len;
}

/* The value a number in the text stands for: the page's integer, or its division by 10^k. */
static void check_numbers(const char *text, size_t len, const struct nvme_ebs_family_text *f, uint64_t value)
{
    const char *line = text, *end = text + len;

    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *sp;
        char number[64];
        size_t n;

        REQUIRE(nl != NULL); /* every line ends */
        sp = nl;
        while (sp > line && sp[-1] != ' ')
            sp--;
        n = (size_t)(nl - sp);
        REQUIRE(n > 0 && n < sizeof(number));
        memcpy(number, sp, n);
        number[n] = '\0';
        /* The scalar's value, or a histogram's _sum, is the page's field; the rest are counts. */
        if (!f->histogram || memcmp(line, "h_sum{", 6) == 0) {
            if (f->scale_digits < 0) {
                REQUIRE(strtoull(number, NULL, 10) == value);
            } else {
                long double exact = (long double)value / powl(10.0L, f->scale_digits);
                double got = strtod(number, NULL);

                REQUIRE(strchr(number, '.') || strchr(number, 'e')); /* spelled as a float */
                REQUIRE(fabsl((long double)got - exact) <= fabsl(exact) * 1.2e-16L);
            }
        } else {
            char *stop;

            strtoull(number, &stop, 10);
            REQUIRE(*stop == '\0' && number[0] >= '0' && number[0] <= '9');
        }
        line = nl + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char header[] = "# HELP x y\n# TYPE x counter\n";
    struct recipe r = {data, size};
    struct nvme_ebs_stats stats;
    struct nvme_ebs_family_text f;
    struct nvme_ebs_layout layout;
    struct nvme_ebs_volume_text v;
    struct nvme_ebs_text le[NVME_EBS_MAX_BINS + 1];
    uint32_t index[NVME_EBS_MAX_BINS];
    uint64_t offsets[NVME_EBS_MAX_BINS], *counter = &stats.total_read_ops, value;
    char *full, *part;
    size_t i, needed, again, calls;
    unsigned control = (unsigned)take(&r, 1), buckets, wraps;

    memset(&stats, 0, sizeof(stats));
    memset(&f, 0, sizeof(f));
    memset(&v, 0, sizeof(v));
    stats.read_hist.num_bins = take(&r, 1);
    buckets = (unsigned)take(&r, 1) % (NVME_EBS_MAX_BINS + 1);
    wraps = (unsigned)take(&r, 1) & 1;
    for (i = 0; i < 11; i++)
        counter[i] = take(&r, 8);
    for (i = 0; i < NVME_EBS_MAX_BINS; i++)
        stats.read_hist.count[i] = (uint32_t)take(&r, 4);
    for (i = 0; i < buckets; i++)
        index[i] = (uint32_t)take(&r, 1);
    for (i = 0; i < NVME_EBS_MAX_BINS; i++)
        offsets[i] = wraps ? take(&r, 1) << 32 : 0;
    for (i = 0; i <= NVME_EBS_MAX_BINS; i++) {
        le[i].ptr = i < buckets ? ",le=\"0.5\"} " : ",le=\"+Inf\"} ";
        le[i].len = strlen(le[i].ptr);
    }

    f.header.ptr = header;
    f.header.len = sizeof(header) - 1;
    f.scale_digits = (int)((control >> 2) & 31) > 19 ? 19 : (int)((control >> 2) & 31);
    for (f.scale = 1, i = 0; i < (size_t)f.scale_digits; i++)
        f.scale *= 10;
    switch (control & 3) {
    case 0:
        f.scale_digits = -1, f.scale = 1;
        /* fall through */
    case 1:
        f.name.ptr = "x_total{";
        f.name.len = 8;
        f.value_offset = offsetof(struct nvme_ebs_stats, total_read_time_us);
        break;
    default:
        f.histogram = 1;
        f.bucket.ptr = "h_bucket{", f.bucket.len = 9;
        f.count.ptr = "h_count{", f.count.len = 8;
        f.sum.ptr = "h_sum{", f.sum.len = 6;
        f.value_offset = offsetof(struct nvme_ebs_stats, total_read_time_us);
        f.histogram_offset = offsetof(struct nvme_ebs_stats, read_hist);
        break;
    }
    layout.buckets = buckets;
    layout.index = index;
    layout.le = le;
    layout.inf = (control & 3) != 3;
    v.stats = &stats;
    v.labels.ptr = (const char *)r.p; /* whatever is left, bytes of any value */
    v.labels.len = r.left;
    v.layout[0] = v.layout[1] = &layout;
    v.offsets[0] = wraps ? offsets : NULL;
    value = stats.total_read_time_us;

    needed = render(&f, &v, 0, &full, &calls); /* each piece in a buffer of its own size */
    REQUIRE(calls == 2);                        /* the header, then the volume's lines */
    REQUIRE(needed >= f.header.len && memcmp(full, header, f.header.len) == 0);
    if (memchr(v.labels.ptr, '\n', v.labels.len) == NULL && memchr(v.labels.ptr, ' ', v.labels.len) == NULL)
        check_numbers(full + f.header.len, needed - f.header.len, &f, value);
    for (i = 0; i < 3; i++) {
        size_t cap = i == 0 ? needed : i == 1 ? needed - 1 : needed / 2;

        again = render(&f, &v, cap, &part, &calls);
        REQUIRE(again == needed && memcmp(part, full, needed) == 0);
        REQUIRE(i > 0 || calls == 1); /* a buffer the text's size takes it in one call */
        free(part);
    }
    free(full);

    {
        uint32_t last[NVME_EBS_MAX_BINS];
        uint64_t added[NVME_EBS_MAX_BINS] = {0};
        size_t bins = stats.read_hist.num_bins <= NVME_EBS_MAX_BINS ? (size_t)stats.read_hist.num_bins : 64;
        int wrapped = 0, rc;

        for (i = 0; i < NVME_EBS_MAX_BINS; i++)
            last[i] = stats.read_hist.count[NVME_EBS_MAX_BINS - 1 - i];
        rc = nvme_ebs_unwrap(&stats, offsetof(struct nvme_ebs_stats, read_hist), last, added);
        for (i = 0; i < NVME_EBS_MAX_BINS; i++) {
            uint32_t before = stats.read_hist.count[NVME_EBS_MAX_BINS - 1 - i];
            int down = i < bins && stats.read_hist.count[i] < before;

            REQUIRE(added[i] == (down ? (uint64_t)1 << 32 : 0));
            REQUIRE(last[i] == (i < bins ? stats.read_hist.count[i] : before)); /* the page's counts, kept */
            wrapped |= down;
        }
        REQUIRE(rc == wrapped);
    }
    return 0;
}
