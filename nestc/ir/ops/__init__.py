"""Op handlers; importing this package registers every one of them."""

from nestc.ir.ops import (  # noqa: F401
    activation,
    conv,
    elementwise,
    linear,
    ml,
    normalization,
    pooling,
    reduce,
    resize,
    shape,
)
