// Packet-level fidelity of cosim's ns-3 backend (cosim/network/ns3/packet.py).
//
// Compiled at run time by cppyy (cppyy.include); needs the ns-3 headers of the `ns3` wheel.
//
//   AdhocNetwork   an ad hoc Wi-Fi network (YansWifiChannel with a given propagation-loss
//                  chain, IdealWifiManager rate control, IPv4 on one subnet, neighbour caches
//                  filled in advance, optionally OLSR or AODV routing) on existing Nodes, plus
//                  the updates sent over it.
//
// An update is one TCP connection (BulkSendApplication -> PacketSink) that carries N bytes
// from one node to another, starting at a given simulated time.  The sink's "Rx" trace
// counts the bytes received; the time the N-th byte arrives is the update's finish time.
// When the last open update finishes, the simulator is stopped (Simulator::Stop()), so the
// caller's clock can follow the round.  At the round's deadline, AbortOpen() resets (TCP RST,
// from the receiver's side) the connections of the unfinished updates, so a lost update
// sends no new data in later rounds.  The segments it already handed to the Wi-Fi MAC stay
// queued: they are sent or dropped by ns-3 itself (WifiMacQueue's MaxDelay, 500 ms by
// default).  Flushing the queues by hand is not safe: it removes MPDUs that a Block Ack
// agreement still waits for, and the originator's window never advances again (seen as
// every later relayed transfer stalling).

#pragma once

#include "ns3/aodv-helper.h"
#include "ns3/application.h"
#include "ns3/boolean.h"
#include "ns3/bulk-send-application.h"
#include "ns3/config.h"
#include "ns3/double.h"
#include "ns3/inet-socket-address.h"
#include "ns3/internet-stack-helper.h"
#include "ns3/ipv4-address-helper.h"
#include "ns3/ipv4-interface-container.h"
#include "ns3/ipv4-list-routing-helper.h"
#include "ns3/ipv4-static-routing-helper.h"
#include "ns3/neighbor-cache-helper.h"
#include "ns3/net-device-container.h"
#include "ns3/node-container.h"
#include "ns3/olsr-helper.h"
#include "ns3/packet-sink.h"
#include "ns3/packet.h"
#include "ns3/pointer.h"
#include "ns3/propagation-delay-model.h"
#include "ns3/propagation-loss-model.h"
#include "ns3/simulator.h"
#include "ns3/string.h"
#include "ns3/tcp-socket-base.h"
#include "ns3/tcp-socket-factory.h"
#include "ns3/uinteger.h"
#include "ns3/wifi-helper.h"
#include "ns3/wifi-mac-helper.h"
#include "ns3/yans-wifi-channel.h"
#include "ns3/yans-wifi-helper.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace cosim_ns3
{

// Reaches TcpSocketBase::SendRST (protected) to abort a connection at once: Close() would
// keep sending the buffered data.
struct TcpAborter : public ns3::TcpSocketBase
{
    static void Abort(ns3::Ptr<ns3::Socket> socket)
    {
        ns3::Ptr<ns3::TcpSocketBase> tcp = ns3::DynamicCast<ns3::TcpSocketBase>(socket);
        if (tcp)
        {
            void (ns3::TcpSocketBase::*sendRst)() = &TcpAborter::SendRST;
            (ns3::PeekPointer(tcp)->*sendRst)();
        }
    }
};

// Reaches Application::m_startEvent (protected) to cancel a start that has not happened yet.
struct StartCanceller : public ns3::Application
{
    static void Cancel(ns3::Ptr<ns3::Application> app)
    {
        ns3::EventId ns3::Application::*start = &StartCanceller::m_startEvent;
        (ns3::PeekPointer(app)->*start).Cancel();
    }
};

class AdhocNetwork;

struct Update
{
    AdhocNetwork* owner = nullptr;
    std::uint64_t bytes = 0;
    std::uint64_t received = 0;
    std::int64_t finishNs = -1;
    bool open = true;
    ns3::Ptr<ns3::BulkSendApplication> sender;
    ns3::Ptr<ns3::PacketSink> sink;

    void OnRx(ns3::Ptr<const ns3::Packet> packet, const ns3::Address& from);
};

class AdhocNetwork
{
  public:
    // standard: 0 = 802.11n, 1 = 802.11ac, 2 = 802.11ax; band: 0 = 2.4 GHz, 1 = 5 GHz, 2 = 6 GHz.
    // routing: 0 = none (one hop), 1 = OLSR (HelloInterval, TcInterval = intervalNs[0], [1]),
    // 2 = AODV (HelloInterval, ActiveRouteTimeout = intervalNs[0], [1]).
    AdhocNetwork(const std::vector<ns3::Ptr<ns3::Node>>& nodes,
                 ns3::Ptr<ns3::PropagationLossModel> loss,
                 int standard,
                 int widthMhz,
                 int band,
                 double txPowerDbm,
                 double antennaGainDb,
                 double noiseFigureDb,
                 double ccaSensitivityDbm,
                 bool nistErrorModel,
                 int routing,
                 const std::vector<std::int64_t>& intervalNs,
                 std::int64_t stream)
    {
        // Full-size segments (ns-3's default is 536 bytes).
        ns3::Config::SetDefault("ns3::TcpSocket::SegmentSize", ns3::UintegerValue(1448));
        for (const auto& node : nodes)
        {
            m_nodes.Add(node);
        }
        ns3::Ptr<ns3::YansWifiChannel> channel = ns3::CreateObject<ns3::YansWifiChannel>();
        channel->SetPropagationLossModel(loss);
        channel->SetPropagationDelayModel(
            ns3::CreateObject<ns3::ConstantSpeedPropagationDelayModel>());

        ns3::YansWifiPhyHelper phy;
        phy.SetChannel(channel);
        static const char* bands[] = {"BAND_2_4GHZ", "BAND_5GHZ", "BAND_6GHZ"};
        phy.Set("ChannelSettings",
                ns3::StringValue("{0, " + std::to_string(widthMhz) + ", " + bands[band] + ", 0}"));
        phy.Set("TxPowerStart", ns3::DoubleValue(txPowerDbm));
        phy.Set("TxPowerEnd", ns3::DoubleValue(txPowerDbm));
        phy.Set("TxGain", ns3::DoubleValue(antennaGainDb));
        phy.Set("RxGain", ns3::DoubleValue(antennaGainDb));
        phy.Set("RxNoiseFigure", ns3::DoubleValue(noiseFigureDb));
        phy.Set("CcaSensitivity", ns3::DoubleValue(ccaSensitivityDbm));
        // ns-3's default ThresholdPreambleDetectionModel drops every frame received below
        // -82 dBm, which would cut off every link the analytic fidelity admits below that
        // power; lowered to the PHY's RxSensitivity (-101 dBm).  Its SNR threshold (4 dB)
        // stays: it is what lets a receiver ignore a weak colliding preamble.
        phy.SetPreambleDetectionModel("ns3::ThresholdPreambleDetectionModel",
                                      "MinimumRssi",
                                      ns3::DoubleValue(-101.0),
                                      "Threshold",
                                      ns3::DoubleValue(4.0));
        phy.SetErrorRateModel(nistErrorModel ? "ns3::NistErrorRateModel"
                                             : "ns3::TableBasedErrorRateModel");

        ns3::WifiHelper wifi;
        static const ns3::WifiStandard standards[] = {ns3::WIFI_STANDARD_80211n,
                                                      ns3::WIFI_STANDARD_80211ac,
                                                      ns3::WIFI_STANDARD_80211ax};
        wifi.SetStandard(standards[standard]);
        wifi.SetRemoteStationManager("ns3::IdealWifiManager");
        if (standard == 2)
        {
            // As the analytic fidelity: HE with LDPC and the 0.8 us guard interval.
            wifi.ConfigHtOptions("LdpcSupported", ns3::BooleanValue(true));
            wifi.ConfigHeOptions("GuardInterval", ns3::TimeValue(ns3::NanoSeconds(800)));
        }
        ns3::WifiMacHelper mac;
        mac.SetType("ns3::AdhocWifiMac");
        m_devices = wifi.Install(phy, mac, m_nodes);
        stream += ns3::WifiHelper::AssignStreams(m_devices, stream);

        // The routing protocol runs on every node from t = 0; its control traffic shares the
        // channel with the updates.  The static routing's subnet route (one hop) is the
        // fallback for destinations the protocol has no route to.
        ns3::InternetStackHelper internet;
        ns3::Ipv4StaticRoutingHelper staticRouting;
        ns3::Ipv4ListRoutingHelper list;
        ns3::OlsrHelper olsr;
        ns3::AodvHelper aodv;
        list.Add(staticRouting, 0);
        if (routing == 1)
        {
            olsr.Set("HelloInterval", ns3::TimeValue(ns3::NanoSeconds(intervalNs.at(0))));
            olsr.Set("TcInterval", ns3::TimeValue(ns3::NanoSeconds(intervalNs.at(1))));
            list.Add(olsr, 10);
            internet.SetRoutingHelper(list);
        }
        else if (routing == 2)
        {
            aodv.Set("HelloInterval", ns3::TimeValue(ns3::NanoSeconds(intervalNs.at(0))));
            aodv.Set("ActiveRouteTimeout", ns3::TimeValue(ns3::NanoSeconds(intervalNs.at(1))));
            list.Add(aodv, 10);
            internet.SetRoutingHelper(list);
        }
        internet.Install(m_nodes);
        stream += internet.AssignStreams(m_nodes, stream);
        if (routing == 1)
        {
            stream += olsr.AssignStreams(m_nodes, stream);
        }
        else if (routing == 2)
        {
            stream += aodv.AssignStreams(m_nodes, stream);
        }
        ns3::Ipv4AddressHelper addresses;
        addresses.SetBase("10.1.0.0", "255.255.0.0");
        m_interfaces = addresses.Assign(m_devices);
        ns3::NeighborCacheHelper neighbours;
        neighbours.PopulateNeighborCache();
    }

    // Sends `bytes` from node `src` to node `dst` (ranks), starting at absolute time `startNs`
    // (not before now); returns the update's id.
    std::size_t Send(std::size_t src, std::size_t dst, std::uint64_t bytes, std::int64_t startNs)
    {
        const std::uint16_t port = static_cast<std::uint16_t>(10000 + (m_updates.size() % 50000));
        auto update = std::make_unique<Update>();
        update->owner = this;
        update->bytes = bytes;

        update->sink = ns3::CreateObject<ns3::PacketSink>();
        update->sink->SetAttribute("Protocol", ns3::TypeIdValue(ns3::TcpSocketFactory::GetTypeId()));
        update->sink->SetAttribute(
            "Local",
            ns3::AddressValue(ns3::InetSocketAddress(ns3::Ipv4Address::GetAny(), port)));
        m_nodes.Get(dst)->AddApplication(update->sink);
        update->sink->SetStartTime(ns3::Seconds(0));
        update->sink->TraceConnectWithoutContext("Rx",
                                                 ns3::MakeCallback(&Update::OnRx, update.get()));

        update->sender = ns3::CreateObject<ns3::BulkSendApplication>();
        update->sender->SetAttribute("Protocol",
                                     ns3::TypeIdValue(ns3::TcpSocketFactory::GetTypeId()));
        update->sender->SetAttribute(
            "Remote",
            ns3::AddressValue(ns3::InetSocketAddress(m_interfaces.GetAddress(dst), port)));
        update->sender->SetAttribute("MaxBytes", ns3::UintegerValue(bytes));
        update->sender->SetAttribute("SendSize", ns3::UintegerValue(1448));
        m_nodes.Get(src)->AddApplication(update->sender);
        const std::int64_t delayNs = startNs - ns3::Simulator::Now().GetNanoSeconds();
        update->sender->SetStartTime(ns3::NanoSeconds(delayNs > 0 ? delayNs : 0));

        m_updates.push_back(std::move(update));
        ++m_open;
        return m_updates.size() - 1;
    }

    std::uint64_t Received(std::size_t id) const
    {
        return m_updates[id]->received;
    }

    // Absolute time (ns) the last byte of update `id` arrived; -1 if it has not.
    std::int64_t FinishNs(std::size_t id) const
    {
        return m_updates[id]->finishNs;
    }

    // Connections the receiver of update `id` has accepted (0: the handshake never completed).
    std::size_t Accepted(std::size_t id) const
    {
        return m_updates[id]->sink->GetAcceptedSockets().size();
    }

    std::size_t Open() const
    {
        return m_open;
    }

    // Aborts every unfinished update: the receiver resets the connection (TCP RST), which
    // closes the sender's side when it arrives; starts not yet due are cancelled.  The
    // sender's socket is not reset by hand: a sender reset that way (SendRST outside
    // ns-3's own state machine) later ran a persist timer on an empty send buffer and
    // crashed the process inside TcpSocketBase::PersistTimeout (ns3_analytic.yaml, packet
    // fidelity, fifth round).  A sender whose RST is lost keeps sending until its next
    // segment reaches the receiver's node, which answers it with another RST.
    void AbortOpen()
    {
        for (auto& update : m_updates)
        {
            if (update->open)
            {
                update->open = false;
                StartCanceller::Cancel(update->sender);
                for (const auto& socket : update->sink->GetAcceptedSockets())
                {
                    TcpAborter::Abort(socket);
                }
            }
        }
        m_open = 0;
    }

    void Finished(Update& update)
    {
        update.open = false;
        if (m_open > 0 && --m_open == 0)
        {
            ns3::Simulator::Stop();
        }
    }

  private:
    ns3::NodeContainer m_nodes;
    ns3::NetDeviceContainer m_devices;
    ns3::Ipv4InterfaceContainer m_interfaces;
    std::vector<std::unique_ptr<Update>> m_updates;
    std::size_t m_open = 0;
};

inline void
Update::OnRx(ns3::Ptr<const ns3::Packet> packet, const ns3::Address&)
{
    received += packet->GetSize();
    if (open && finishNs < 0 && received >= bytes)
    {
        finishNs = ns3::Simulator::Now().GetNanoSeconds();
        owner->Finished(*this);
    }
}

} // namespace cosim_ns3
