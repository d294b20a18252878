"""A userspace NVMe/TCP target that looks like EBS volumes, for the kernel tests.

Run inside the QEMU guest and connected to by the guest kernel's own nvme-tcp driver over
the guest's loopback, it gets real log pages 0xD0 through a real Linux NVMe driver:
``pdu`` (the wire format), ``commands`` (what each command answers), ``volume`` (identity,
page files, namespace), ``connection`` (one queue), ``server`` (the listeners).
"""
