"""What the generators share: a downloaded wheel is used only when its sha256 is the pinned one,
so that what they generate can be reproduced byte for byte."""

import hashlib


def checked(wheel, package, version, sha256):
    """The wheel's path, once its sha256 is `sha256` (the pinned `package` `version`)."""
    with open(wheel, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != sha256:
        raise SystemExit("%s has sha256 %s, not the pinned %s %s (%s)"
                         % (wheel, digest, package, version, sha256))
    return wheel
