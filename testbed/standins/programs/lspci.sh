#!/bin/sh
# sdinfra STAND-IN for pciutils' lspci on the rocm hosts (TEST ONLY): the RX 460 the stand-in
# rocminfo lists (testbed/standins/amd.py: Chip ID 0x67ef, BDFID 256 = 01:00.0). The line is the
# seed post's `lspci -s 08:00.0 -vvv` header (shared/seed) at that slot, with what -nn adds: the
# class code and the vendor:device pair in brackets (pciutils lspci.c, show_device via
# pci_lookup_name with PCI_LOOKUP_NUMERIC|PCI_LOOKUP_MIXED). Every form the preflight runs
# (-nn; -vvv -nn -d 1002:) prints the device line; no capability lines are made up.
echo '01:00.0 VGA compatible controller [0300]: Advanced Micro Devices, Inc. [AMD/ATI] Baffin [Radeon RX 460/560D / Pro 450/455/460/555/555X/560/560X] [1002:67ef] (rev cf)'
