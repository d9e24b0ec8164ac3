"""The per-pair loops of the analytic fidelity, in C++ (compiled once per process by cppyy).

From Python each ns-3 call costs microseconds of binding overhead; a links() query
makes n(n-1)/2 propagation calls and up to 12 error-rate calls per pair, so the loops
run in C++ and Python sees only NumPy arrays.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from cosim.network.ns3._loader import load_ns

__all__ = ["kernel"]

_SOURCE = r"""
#include "ns3/error-rate-model.h"
#include "ns3/mobility-model.h"
#include "ns3/propagation-loss-model.h"
#include "ns3/wifi-mode.h"
#include "ns3/wifi-tx-vector.h"

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace cosim_ns3
{

// Received power (dBm) over every unordered pair, row-major (n, n), symmetric; the diagonal
// is -inf.  Pairs are visited in the order (0,1), (0,2), (1,2), (0,3), ... so that random
// draws (fading, 3GPP shadowing) among the first k devices do not depend on later ones.
void
rx_power_dbm(ns3::Ptr<ns3::PropagationLossModel> model,
             const std::vector<ns3::Ptr<ns3::MobilityModel>>& mobility,
             double txPowerDbm,
             double* out)
{
    const std::size_t n = mobility.size();
    for (std::size_t i = 0; i < n; ++i)
    {
        out[i * n + i] = -std::numeric_limits<double>::infinity();
    }
    for (std::size_t j = 1; j < n; ++j)
    {
        for (std::size_t i = 0; i < j; ++i)
        {
            const double rx = model->CalcRxPower(txPowerDbm, mobility[i], mobility[j]);
            out[i * n + j] = rx;
            out[j * n + i] = rx;
        }
    }
}

// For each SNR (dB): the highest mode index whose packet error rate for `nbits` is <=
// perTarget (-1 if none), and that packet error rate (1 if none).
void
best_modes(ns3::Ptr<ns3::ErrorRateModel> errorModel,
           const std::vector<ns3::WifiMode>& modes,
           const std::vector<ns3::WifiTxVector>& txVectors,
           const double* snrDb,
           std::size_t count,
           std::uint64_t nbits,
           double perTarget,
           std::int64_t* modeOut,
           double* perOut)
{
    for (std::size_t k = 0; k < count; ++k)
    {
        modeOut[k] = -1;
        perOut[k] = 1.0;
        if (std::isnan(snrDb[k]) || snrDb[k] == -std::numeric_limits<double>::infinity())
        {
            continue;
        }
        const double snr = std::pow(10.0, snrDb[k] / 10.0);
        for (std::size_t m = modes.size(); m-- > 0;)
        {
            const double per =
                1.0 - errorModel->GetChunkSuccessRate(modes[m], txVectors[m], snr, nbits);
            if (per <= perTarget)
            {
                modeOut[k] = static_cast<std::int64_t>(m);
                perOut[k] = per;
                break;
            }
        }
    }
}

} // namespace cosim_ns3
"""


@cache
def kernel() -> Any:
    """The compiled ``cosim_ns3`` C++ namespace (``rx_power_dbm``, ``best_modes``)."""
    load_ns()
    import cppyy

    cppyy.cppdef(_SOURCE)
    return cppyy.gbl.cosim_ns3
