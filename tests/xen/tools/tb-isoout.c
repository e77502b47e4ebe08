/*
 * tb-isoout /dev/bus/usb/BBB/DDD SECONDS
 *
 * Streams isochronous OUT data to the first alternate setting that has an isochronous OUT
 * endpoint (a USB speaker's streaming interface), through usbfs: takes the interface from
 * its driver (USBDEVFS_DISCONNECT_CLAIM), selects that setting, and keeps 8 URBs of 8
 * packets in flight for SECONDS, each packet one max-size packet of a ramp. Exists because
 * snd-usb-audio does not start QEMU's usb-audio speaker from a plain ALSA ioctl client, even
 * natively in dom0, so the path is exercised without ALSA. Built by tests/xen/build.sh.
 *
 * Prints "KEY value" lines: URBS completed, PACKETS, BAD (packets with an error status or
 * fewer bytes than sent), WALL seconds, PER_MS (packets per millisecond of wall time: a
 * full-speed device takes one packet per 1 ms frame, so about 1.0 keeps real time).
 * Exits 1 on a setup error or when no URB completes for 5 s, 3 if BAD > 0.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>
#include <linux/usbdevice_fs.h>

#define PACKETS 8
#define INFLIGHT 8

static const char *dev;

static void die(const char *what)
{
	fprintf(stderr, "tb-isoout: %s: %s: %s\n", dev, what, errno ? strerror(errno) : "failed");
	exit(1);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The first (interface, alternate, endpoint, max packet) with an iso OUT endpoint in the
 * descriptors usbfs returns (device descriptor, then each configuration's). */
static int find_iso_out(const uint8_t *d, size_t n, unsigned *ifc, unsigned *alt, unsigned *ep,
			unsigned *mps)
{
	size_t i = 0;
	unsigned cur_ifc = 0, cur_alt = 0;
	while (i + 2 <= n && d[i] >= 2 && i + d[i] <= n) {
		if (d[i + 1] == 4 && d[i] >= 9) {	/* interface */
			cur_ifc = d[i + 2];
			cur_alt = d[i + 3];
		} else if (d[i + 1] == 5 && d[i] >= 7) {	/* endpoint */
			unsigned addr = d[i + 2], attr = d[i + 3], size = d[i + 4] | (d[i + 5] << 8);
			if ((attr & 3) == 1 && !(addr & 0x80) && (size & 0x7ff)) {
				*ifc = cur_ifc;
				*alt = cur_alt;
				*ep = addr;
				*mps = size & 0x7ff;
				return 0;
			}
		}
		i += d[i];
	}
	return -1;
}

int main(int argc, char **argv)
{
	uint8_t desc[4096];
	unsigned ifc, alt, ep, mps;
	unsigned long long urbs = 0, packets = 0, bad = 0;
	double secs, t0, t, last;
	ssize_t n;
	int fd, k, submitted = 0;
	struct usbdevfs_urb *u[INFLIGHT];

	if (argc != 3 || (secs = atof(argv[2])) <= 0 || secs > 3600) {
		fprintf(stderr, "usage: tb-isoout /dev/bus/usb/BBB/DDD SECONDS\n");
		return 2;
	}
	dev = argv[1];
	fd = open(dev, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		die("open");
	n = read(fd, desc, sizeof desc);
	if (n <= 18 || find_iso_out(desc + 18, (size_t)n - 18, &ifc, &alt, &ep, &mps) != 0) {
		errno = 0;
		die("no isochronous OUT endpoint in the descriptors");
	}
	struct usbdevfs_disconnect_claim dc = { .interface = ifc, .flags = 0 };
	if (ioctl(fd, USBDEVFS_DISCONNECT_CLAIM, &dc) != 0)
		die("DISCONNECT_CLAIM");
	struct usbdevfs_setinterface si = { .interface = ifc, .altsetting = alt };
	if (ioctl(fd, USBDEVFS_SETINTERFACE, &si) != 0)
		die("SETINTERFACE");
	fprintf(stderr, "tb-isoout: interface %u alt %u endpoint 0x%02x, %u-byte packets\n", ifc,
		alt, ep, mps);
	for (k = 0; k < INFLIGHT; k++) {
		u[k] = calloc(1, sizeof *u[k] + PACKETS * sizeof(struct usbdevfs_iso_packet_desc));
		if (!u[k] || !(u[k]->buffer = malloc((size_t)mps * PACKETS)))
			die("malloc");
		for (unsigned b = 0; b < mps * PACKETS; b++)
			((uint8_t *)u[k]->buffer)[b] = (uint8_t)b;
	}
	t0 = last = now();
	while ((t = now()) - t0 < secs || submitted > 0) {
		/* Refill while the time lasts. */
		for (k = 0; k < INFLIGHT && t - t0 < secs; k++) {
			struct usbdevfs_urb *x = u[k];
			if (x->usercontext)	/* in flight */
				continue;
			void *buf = x->buffer;
			memset(x, 0, sizeof *x + PACKETS * sizeof(struct usbdevfs_iso_packet_desc));
			x->buffer = buf;
			x->type = USBDEVFS_URB_TYPE_ISO;
			x->endpoint = ep;
			x->flags = USBDEVFS_URB_ISO_ASAP;
			x->number_of_packets = PACKETS;
			x->buffer_length = (int)(mps * PACKETS);
			for (int p = 0; p < PACKETS; p++)
				x->iso_frame_desc[p].length = mps;
			x->usercontext = x;
			if (ioctl(fd, USBDEVFS_SUBMITURB, x) != 0)
				die("SUBMITURB");
			submitted++;
		}
		struct pollfd pfd = { fd, POLLOUT, 0 };
		if (poll(&pfd, 1, 1000) < 0 && errno != EINTR)
			die("poll");
		struct usbdevfs_urb *done = NULL;
		while (ioctl(fd, USBDEVFS_REAPURBNDELAY, &done) == 0 && done) {
			submitted--;
			urbs++;
			for (int p = 0; p < done->number_of_packets; p++) {
				packets++;
				if (done->iso_frame_desc[p].status ||
				    done->iso_frame_desc[p].actual_length < done->iso_frame_desc[p].length)
					bad++;
			}
			done->usercontext = NULL;
			last = now();
			done = NULL;
		}
		if (now() - last > 5) {
			errno = 0;
			die("no URB completed for 5 s");
		}
	}
	t = now() - t0;
	printf("URBS %llu\nPACKETS %llu\nBAD %llu\nWALL %.3f\nPER_MS %.3f\n", urbs, packets, bad, t,
	       (double)packets / (t * 1000));
	return bad ? 3 : 0;
}
