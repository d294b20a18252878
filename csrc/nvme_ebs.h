/*
 * The C core of nvme_ebs: two NVMe admin commands and the decoders of their
 * answers. This header is the single source of truth for the cffi cdef: the
 * build script feeds it everything between the CDEF markers, so that part may
 * only hold what cffi's parser accepts (integer #defines, structs, prototypes).
 */
#ifndef NVME_EBS_H
#define NVME_EBS_H

#include <stddef.h>
#include <stdint.h>

/* CDEF-BEGIN */
#define NVME_EBS_PAGE_SIZE 4096
#define NVME_EBS_MAX_BINS 64

#define NVME_EBS_MAGIC_EBS 0x3C23B510
#define NVME_EBS_MAGIC_INSTANCE_STORE 0xEC2C0D7E

/* Opcodes, exported so Python names the command in its errors. */
#define NVME_EBS_OPC_GET_LOG_PAGE 0x02
#define NVME_EBS_OPC_IDENTIFY 0x06

/* Page kinds (nvme_ebs_stats.kind). */
#define NVME_EBS_KIND_EBS 1
#define NVME_EBS_KIND_INSTANCE_STORE 2

/* Decoder codes: NVME_EBS_OK or one of these, the check that failed. */
#define NVME_EBS_OK 0
#define NVME_EBS_ERR_SHORT 1     /* buffer shorter than a page */
#define NVME_EBS_ERR_MAGIC 2     /* unknown magic */
#define NVME_EBS_ERR_NUM_BINS 3  /* num_bins > NVME_EBS_MAX_BINS */
#define NVME_EBS_ERR_BIN_RANGE 4 /* lower >= upper on a bin that is not the open last one */
#define NVME_EBS_ERR_BIN_ORDER 5 /* a bin starts below the end of the one before */

/* Histogram in structure-of-arrays form: each column unpacks in one call. */
struct nvme_ebs_histogram {
    uint64_t num_bins;
    uint64_t lower_us[NVME_EBS_MAX_BINS];
    uint64_t upper_us[NVME_EBS_MAX_BINS];
    uint32_t count[NVME_EBS_MAX_BINS];
};

struct nvme_ebs_stats {
    uint32_t magic;
    uint32_t version;
    int kind;
    uint64_t total_read_ops;
    uint64_t total_write_ops;
    uint64_t total_read_bytes;
    uint64_t total_write_bytes;
    uint64_t total_read_time_us;
    uint64_t total_write_time_us;
    uint64_t ebs_volume_performance_exceeded_iops_us;
    uint64_t ebs_volume_performance_exceeded_tp_us;
    uint64_t ec2_instance_ebs_performance_exceeded_iops_us;
    uint64_t ec2_instance_ebs_performance_exceeded_tp_us;
    uint64_t volume_queue_length;
    struct nvme_ebs_histogram read_hist;
    struct nvme_ebs_histogram write_hist;
    /* Where a decode failed: 0 read histogram, 1 write, -1 elsewhere; bin index. */
    int error_histogram;
    int error_bin;
};

/* Identify Controller fields, NUL-terminated with the space padding trimmed. */
struct nvme_ebs_identity {
    uint16_t vid;
    uint16_t ssvid;
    char serial[21];
    char model[41];
    char firmware[9];
    char bdev_mapping[33];
};

/*
 * What a command came to. `kind` says which space `code` belongs to, so that
 * an errno, an NVMe status and a decoder code can never be mistaken for one
 * another:
 */
#define NVME_EBS_RESULT_OK 0          /* code is 0 */
#define NVME_EBS_RESULT_ERRNO 1       /* code is the (positive) errno of open, fstat or ioctl */
#define NVME_EBS_RESULT_NVME_STATUS 2 /* code is the NVMe completion status the device answered */
#define NVME_EBS_RESULT_DECODE 3      /* code is the NVME_EBS_ERR_* check the answer failed */

struct nvme_ebs_result {
    int kind;
    int code;
};

/*
 * Commands. Each opens `path` read-only, sends one fixed admin command with
 * a NVME_EBS_PAGE_SIZE buffer and closes the device: OK, ERRNO or NVME_STATUS.
 */
struct nvme_ebs_result nvme_ebs_identify(const char *path, uint8_t *page);
struct nvme_ebs_result nvme_ebs_get_stats_page(const char *path, uint8_t *page);

/* Decoders. Return NVME_EBS_OK or an NVME_EBS_ERR_* code. */
int nvme_ebs_decode_stats(const uint8_t *page, size_t len, struct nvme_ebs_stats *out);
int nvme_ebs_decode_identity(const uint8_t *page, size_t len, struct nvme_ebs_identity *out);

/*
 * Both in one call, the exporter's hot path: the command's result as above,
 * or, when the device answered a page that does not decode, DECODE.
 */
struct nvme_ebs_result nvme_ebs_read_stats(const char *path, uint8_t *page, struct nvme_ebs_stats *out);

/*
 * How long the kernel lets each later command run before aborting it (the
 * passthrough's timeout_ms), for every thread; 0, the default, leaves the
 * kernel's own admin timeout.
 */
void nvme_ebs_set_timeout_ms(uint32_t timeout_ms);
/*
 * Exposition text of decoded pages (render.c). Python prepares every name, label and `le`
 * text from its metric table; the renderer writes them with the numbers of each page.
 */
struct nvme_ebs_text {
    const char *ptr;
    size_t len;
};

/* The buckets one histogram serves for one set of bin edges. */
struct nvme_ebs_layout {
    size_t buckets;                  /* finite edges served */
    const uint32_t *index;           /* bin index of each, into the cumulative counts */
    const struct nvme_ebs_text *le;  /* ',le="..."} ' of each, then of +Inf when inf is set */
    int inf;
};

struct nvme_ebs_volume_text {
    const struct nvme_ebs_stats *stats;
    struct nvme_ebs_text labels;              /* the volume's labels, without braces */
    const struct nvme_ebs_layout *layout[2];  /* per histogram slot */
    const uint64_t *offsets[2];               /* per histogram slot: added to each bin, or NULL */
};

struct nvme_ebs_family_text {
    struct nvme_ebs_text header;  /* written first: the family's # HELP and # TYPE lines */
    int histogram;            /* 0: one line per volume, NAME{labels} value */
    int slot;                 /* histogram: which layout and offsets of a volume */
    struct nvme_ebs_text name;    /* scalar: the line's name and opening brace */
    struct nvme_ebs_text bucket;  /* histogram: NAME_bucket{, NAME_count{, NAME_sum{ */
    struct nvme_ebs_text count;
    struct nvme_ebs_text sum;
    size_t value_offset;      /* the uint64_t value (a histogram's sum) in struct nvme_ebs_stats */
    size_t histogram_offset;  /* the struct nvme_ebs_histogram in struct nvme_ebs_stats */
    uint64_t scale;           /* 10^scale_digits: the value is written as Python's repr(value / scale) */
    int scale_digits;         /* -1: the value is written as an integer */
};

/* Where a text written in pieces stands. Start from all zeros. */
struct nvme_ebs_render_pos {
    size_t family;  /* the family being written: nfamilies once the text is complete */
    size_t piece;   /* within it: 0 its header, then 1 + the index of each volume's lines */
    size_t needed;  /* after a call that could write nothing: the room its next piece takes */
};

/*
 * The families, each its header then its lines for the n volumes, written from `pos` on into
 * out, whole pieces only (a header, or a volume's lines of one family), as many as fit in cap;
 * returns the bytes written and moves `pos` past them. Returns 0 with pos->needed set when the
 * next piece alone is larger than cap, and 0 once pos->family is nfamilies.
 */
size_t nvme_ebs_render_next(char *out, size_t cap, const struct nvme_ebs_family_text *families, size_t nfamilies,
                            const struct nvme_ebs_volume_text *volumes, size_t n, struct nvme_ebs_render_pos *pos);
/*
 * A histogram's 32-bit counts made monotonic: compares the counts of the histogram at
 * `histogram_offset` in `now` with `last` (the previous read's, of the same bins: the caller
 * compares the edges), adds 2^32 to offsets[i] for each bin whose count went down (it wrapped),
 * and copies the counts into `last`. Returns 1 if a bin wrapped, else 0.
 */
int nvme_ebs_unwrap(const struct nvme_ebs_stats *now, size_t histogram_offset, uint32_t *last, uint64_t *offsets);

/*
 * glibc malloc for a long-running exporter: at most `arena_max` arenas, and blocks of
 * `mmap_threshold` bytes or more mapped on their own, so a large response goes back to the
 * system when freed. Returns 1 when both were taken.
 */
int nvme_ebs_tune_malloc(int arena_max, int mmap_threshold);
/* CDEF-END */

#endif
