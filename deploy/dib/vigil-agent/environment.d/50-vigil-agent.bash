# Kernel command line of the image (the bootloader element writes it into the grub
# configuration): IMA with the ima-ng template (file digests of any algorithm, with
# their algorithm) and SHA-256 file digests. The boot-time policy `tcb` measures from
# early boot until systemd loads /etc/ima/ima-policy, which replaces it.
# DIB_VIGIL_IMA_CMDLINE replaces these settings (e.g. `ima_template=ima-sig` for
# signed files).
export DIB_VIGIL_IMA_CMDLINE=${DIB_VIGIL_IMA_CMDLINE:-ima_policy=tcb ima_template=ima-ng ima_hash=sha256}
export DIB_BOOTLOADER_DEFAULT_CMDLINE="${DIB_BOOTLOADER_DEFAULT_CMDLINE:-nofb nomodeset gfxpayload=text} $DIB_VIGIL_IMA_CMDLINE"
