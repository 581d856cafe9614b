"""The ``clickacall`` command and ``clickacall up``: the layer above the roles they start.

The layers import downwards only: ``ext`` <- ``relay`` <- ``control`` <- ``bench``, and this
package above them all. A relay node (``relay`` and ``ext``) installs and runs without it.
"""
