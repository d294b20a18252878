/*
 * The yardstick of `make bench`: a plain C program doing a scrape's work without Python.
 * Per round: sysfs discovery (list class/nvme, read model, serial and firmware_rev, list the
 * namespaces), per EBS controller open/ioctl/close and decode (csrc/nvme_ebs.c), then the
 * text of the page families into one buffer (bucket edges formatted once per histogram).
 * Prints the bytes of one text, and in seconds the rounds' median wall, the CPU time per
 * round (getrusage) and the wall time per round of discovery and reads alone (io).
 *
 *     reference SYSFS DEV ROUNDS
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "nvme_ebs.h"

#define MAX_DEVICES 1024

struct device {
    char name[64];
    char namespace_[80];
    char serial[64];
    char model[64];
    char firmware[64];
    struct nvme_ebs_stats stats;
};

static struct device devices[MAX_DEVICES];

static void read_attr(const char *dir, const char *name, char *out, size_t cap)
{
    char path[512];
    ssize_t n;
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    out[0] = '\0';
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    n = read(fd, out, cap - 1);
    close(fd);
    if (n < 0)
        n = 0;
    while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == ' '))
        n--;
    out[n] = '\0';
}

static int is_controller(const char *name)
{
    const char *p = name + 4;

    if (strncmp(name, "nvme", 4) != 0 || !*p)
        return 0;
    for (; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

static int discover(const char *sysfs)
{
    char class_dir[256], dir[512];
    struct dirent *e;
    DIR *d, *c;
    int n = 0;

    snprintf(class_dir, sizeof(class_dir), "%s/class/nvme", sysfs);
    d = opendir(class_dir);
    if (!d)
        return 0;
    while ((e = readdir(d)) && n < MAX_DEVICES) {
        struct device *dev = &devices[n];

        if (!is_controller(e->d_name))
            continue;
        snprintf(dev->name, sizeof(dev->name), "%s", e->d_name);
        snprintf(dir, sizeof(dir), "%s/%s", class_dir, e->d_name);
        read_attr(dir, "model", dev->model, sizeof(dev->model));
        read_attr(dir, "serial", dev->serial, sizeof(dev->serial));
        read_attr(dir, "firmware_rev", dev->firmware, sizeof(dev->firmware));
        snprintf(dev->namespace_, sizeof(dev->namespace_), "%s", dev->name);
        c = opendir(dir);
        if (c) {
            struct dirent *ns;
            size_t len = strlen(dev->name);

            while ((ns = readdir(c)))
                if (strncmp(ns->d_name, dev->name, len) == 0 && ns->d_name[len] == 'n')
                    snprintf(dev->namespace_, sizeof(dev->namespace_), "%s", ns->d_name);
            closedir(c);
        }
        if (strcmp(dev->model, "Amazon Elastic Block Store") == 0)
            n++;
    }
    closedir(d);
    return n;
}

static const char *const scalars[] = {
    "read_ops_total", "write_ops_total", "read_bytes_total", "write_bytes_total", "read_time_seconds_total",
    "write_time_seconds_total", "volume_performance_exceeded_iops_seconds_total",
    "volume_performance_exceeded_throughput_seconds_total", "instance_performance_exceeded_iops_seconds_total",
    "instance_performance_exceeded_throughput_seconds_total", "volume_queue_length",
};

static uint64_t scalar(const struct nvme_ebs_stats *s, int i)
{
    const uint64_t *first = &s->total_read_ops;

    return first[i];
}

static char *put(char *p, const char *s)
{
    size_t n = strlen(s);

    memcpy(p, s, n);
    return p + n;
}

static char *put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

static char *put_seconds(char *p, uint64_t us)
{
    return p + sprintf(p, "%.17g", (double)us / 1e6);
}

/* The labels of a line, from { to the space before the value. */
static char *put_labels(char *p, const struct device *d, const char *le)
{
    p = put(p, "{volume_id=\"");
    p = put(p, d->serial);
    p = put(p, "\",device=\"");
    p = put(p, d->namespace_);
    if (le) {
        p = put(p, "\",le=\"");
        p = put(p, le);
    }
    return put(p, "\"} ");
}

/* Text sizes are bounded by MAX_DEVICES and the bins: the buffer is allocated for the worst case. */
static size_t render(char *out, int n)
{
    static char le[NVME_EBS_MAX_BINS][32];
    char *p = out;
    int f, i, h;
    uint64_t b;

    for (f = 0; f < 11; f++) {
        p += sprintf(p, "# HELP ebs_%s ...\n# TYPE ebs_%s counter\n", scalars[f], scalars[f]);
        for (i = 0; i < n; i++) {
            uint64_t v = scalar(&devices[i].stats, f);

            p = put(p, "ebs_");
            p = put(p, scalars[f]);
            p = put_labels(p, &devices[i], NULL);
            p = f >= 4 && f <= 9 ? put_seconds(p, v) : put_u64(p, v);
            *p++ = '\n';
        }
    }
    for (h = 0; h < 2; h++) {
        const char *name = h ? "write_io_latency_seconds" : "read_io_latency_seconds";
        const struct nvme_ebs_histogram *first = h ? &devices[0].stats.write_hist : &devices[0].stats.read_hist;

        for (b = 0; n && b < first->num_bins; b++) /* every volume has the first one's edges here */
            snprintf(le[b], sizeof(le[b]), "%g", (double)first->upper_us[b] / 1e6);
        p += sprintf(p, "# HELP ebs_%s ...\n# TYPE ebs_%s histogram\n", name, name);
        for (i = 0; i < n; i++) {
            const struct nvme_ebs_histogram *hist = h ? &devices[i].stats.write_hist : &devices[i].stats.read_hist;
            uint64_t total = 0;

            for (b = 0; b < hist->num_bins; b++) {
                total += hist->count[b];
                p = put(p, "ebs_");
                p = put(p, name);
                p = put(p, "_bucket");
                p = put_labels(p, &devices[i], b + 1 < hist->num_bins ? le[b] : "+Inf");
                p = put_u64(p, total);
                *p++ = '\n';
            }
            p = put(p, "ebs_");
            p = put(p, name);
            p = put(p, "_count");
            p = put_labels(p, &devices[i], NULL);
            p = put_u64(p, total);
            p = put(p, "\nebs_");
            p = put(p, name);
            p = put(p, "_sum");
            p = put_labels(p, &devices[i], NULL);
            p = put_seconds(p, h ? devices[i].stats.total_write_time_us : devices[i].stats.total_read_time_us);
            *p++ = '\n';
        }
    }
    return (size_t)(p - out);
}

static double now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    static uint8_t page[NVME_EBS_PAGE_SIZE];
    size_t bytes = 0;
    char *out = malloc((size_t)MAX_DEVICES * 160 * (11 + 2 * (NVME_EBS_MAX_BINS + 2)) + 65536), path[512];
    int rounds, r, i, n = 0, failed = 0;
    double *walls, cpu_start, io = 0;

    if (argc != 4 || !out) {
        fprintf(stderr, "usage: reference SYSFS DEV ROUNDS\n");
        return 2;
    }
    rounds = atoi(argv[3]);
    walls = calloc((size_t)(rounds > 0 ? rounds : 1), sizeof(double));
    cpu_start = cpu();
    for (r = 0; r < rounds; r++) {
        double start = now();

        n = discover(argv[1]);
        for (i = 0; i < n; i++) {
            snprintf(path, sizeof(path), "%s/%s", argv[2], devices[i].name);
            if (nvme_ebs_read_stats(path, page, &devices[i].stats).kind != NVME_EBS_RESULT_OK)
                failed++;
        }
        io += now() - start;
        bytes = render(out, n);
        walls[r] = now() - start;
    }
    qsort(walls, (size_t)rounds, sizeof(double), by_value);
    printf("volumes %d failed %d bytes %zu wall %.9f cpu %.9f io %.9f\n", n, failed, bytes, walls[rounds / 2],
           (cpu() - cpu_start) / rounds, io / rounds);
    return failed ? 1 : 0;
}
