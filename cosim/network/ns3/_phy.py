"""ns-3's Wi-Fi PHY abstraction: the MCSs of a standard and channel width, their rates and
packet error rates (from ns-3's error-rate models), for one spatial stream."""

from __future__ import annotations

import numpy as np

from cosim.network.ns3._kernel import kernel
from cosim.network.ns3._loader import cpp, load_ns

__all__ = ["GUARD_INTERVAL_NS", "Phy"]

GUARD_INTERVAL_NS = 800
"""Long guard interval for HT/VHT, 0.8 us for HE (the builtin backend's 13.6 us HE symbol)."""

# standard -> (modulation, highest MCS index, preamble, LDPC).  HE uses LDPC (mandatory
# above 20 MHz and for MCS 10-11); HT and VHT the default BCC.
_STANDARDS = {
    "802.11n": ("HtPhy", "GetHtMcs", 7, "WIFI_PREAMBLE_HT_MF", False),
    "802.11ac": ("VhtPhy", "GetVhtMcs", 9, "WIFI_PREAMBLE_VHT_SU", False),
    "802.11ax": ("HePhy", "GetHeMcs", 11, "WIFI_PREAMBLE_HE_SU", True),
}
ERROR_MODELS = {"table": "TableBasedErrorRateModel", "nist": "NistErrorRateModel"}


class Phy:
    """The single-stream MCSs of ``standard`` at ``channel_width_mhz`` and an ns-3 error-rate model.

    ``mcs_indices[k]`` is the standard's MCS number of mode k (modes ascend); VHT MCS 9
    is left out at 20 MHz, where one spatial stream does not allow it.
    """

    def __init__(self, standard: str, channel_width_mhz: int, error_model: str) -> None:
        ns = self._ns = load_ns()
        phy_class, getter, top, preamble, ldpc = _STANDARDS[standard]
        mode_of = getattr(getattr(ns, phy_class), getter)
        width = float(channel_width_mhz)
        indices = [
            i
            for i in range(top + 1)
            if not (standard == "802.11ac" and not ns.VhtPhy.IsCombinationAllowed(i, width, 1))
        ]
        self.modes = cpp().std.vector["ns3::WifiMode"]()
        self.tx_vectors = cpp().std.vector["ns3::WifiTxVector"]()
        rates = []
        for i in indices:
            mode = mode_of(i)
            tx_vector = ns.WifiTxVector(
                mode,
                0,
                getattr(ns, preamble),
                ns.NanoSeconds(GUARD_INTERVAL_NS),
                1,
                1,
                0,
                width,
                False,
                False,
                ldpc,
            )
            self.modes.push_back(mode)
            self.tx_vectors.push_back(tx_vector)
            rates.append(float(mode.GetDataRate(tx_vector)))
        self.mcs_indices = np.array(indices, dtype=np.int64)
        self.rates_bps = np.array(rates)
        self.error_model = ns.CreateObject[getattr(ns, ERROR_MODELS[error_model])]()

    def best(self, snr_db: np.ndarray, packet_bits: int, per_target: float) -> tuple[np.ndarray, np.ndarray]:
        """Per SNR: (position in ``mcs_indices`` of the highest mode whose PER <= per_target, or -1;
        its PER, or 1).  Same shape as ``snr_db``."""
        snr = np.ascontiguousarray(snr_db, dtype=np.float64).ravel()
        mode = np.empty(snr.shape, dtype=np.int64)
        per = np.empty(snr.shape)
        kernel().best_modes(
            self.error_model,
            self.modes,
            self.tx_vectors,
            snr,
            snr.size,
            int(packet_bits),
            float(per_target),
            mode,
            per,
        )
        return mode.reshape(np.shape(snr_db)), per.reshape(np.shape(snr_db))

    def per(self, snr_db: float, position: int, packet_bits: int) -> float:
        """Packet error rate of mode ``position`` at ``snr_db`` (one ns-3 call; for checks)."""
        snr = 10.0 ** (snr_db / 10.0)
        success = self.error_model.GetChunkSuccessRate(
            self.modes[position], self.tx_vectors[position], snr, int(packet_bits)
        )
        return 1.0 - float(success)
