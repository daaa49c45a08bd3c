//! `clawswarm.v1.Gateway`: the controller's second front door (beside
//! Slack). Chat with any agent and administer agents; admin certificates
//! only.

use std::pin::Pin;

use clawswarm_certs::{AgentId, SpiffeId, TrustDomain};
use clawswarm_proto::v1::{
    self as pb, ChatEvent, ChatRequest, chat_event::Event, chat_request::Kind,
    gateway_server::Gateway,
};
use futures::Stream;
use tonic::{Request, Response, Status};
use tracing::info;

use crate::{
    mesh::{TurnEvent, TurnSpec, TurnStream},
    notice_inbox::NoticeInbox,
    router::Router,
    runtime::{AgentMode, AgentRecord, AgentSpec},
};

/// Conversation used when a Gateway caller does not name one.
pub const DEFAULT_CONVERSATION: &str = "gateway";
/// Reply target for turns whose requester is a Gateway client: nobody but
/// that client (resuming by turn id) can finish them.
pub const GATEWAY_REPLY_TARGET: &[u8] = b"gateway";

pub struct GatewayService {
    router: Router,
    trust_domain: TrustDomain,
    namespace: String,
    /// `None` when Slack delivers notices.
    notices: Option<NoticeInbox>,
}

impl GatewayService {
    pub fn new(
        router: Router,
        trust_domain: TrustDomain,
        namespace: String,
        notices: Option<NoticeInbox>,
    ) -> Self {
        Self {
            router,
            trust_domain,
            namespace,
            notices,
        }
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<String, Status> {
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated("Gateway requires an admin client certificate")
        })?;
        match clawswarm_certs::peer_spiffe_id(&certs) {
            Ok(SpiffeId::Admin { trust_domain, name }) if trust_domain == self.trust_domain => {
                Ok(name)
            }
            Ok(other) => Err(Status::permission_denied(format!(
                "{other} is not an admin identity"
            ))),
            Err(e) => Err(Status::unauthenticated(format!(
                "client certificate has no usable SPIFFE id: {e}"
            ))),
        }
    }

    fn agent_id(&self, name: &str) -> Result<AgentId, Status> {
        AgentId::new(self.namespace.clone(), name).map_err(|e| {
            Status::invalid_argument(format!("agent {name:?} is not a valid agent name: {e}"))
        })
    }

    fn skills(&self) -> Result<&crate::skills::Skills, Status> {
        self.router
            .skills()
            .map(|s| &**s)
            .ok_or_else(|| Status::unimplemented("this controller has no skills library"))
    }

    fn to_proto(&self, r: AgentRecord) -> pb::Agent {
        let state = self.router.mesh().state(&r.id);
        let detail = crate::router::shown_detail(&r, &state);
        pb::Agent {
            name: r.id.name().to_owned(),
            owner: r.owner,
            template: r.template,
            mode: match r.mode {
                AgentMode::Running => pb::AgentMode::Running,
                AgentMode::Suspended => pb::AgentMode::Suspended,
            } as i32,
            phase: r.phase.to_string(),
            connected: state.connected,
            workload_ready: state.workload_ready,
            detail,
            usage: Some(r.usage.to_proto()),
            workload: state.workload,
            data: (r.data != crate::runtime::DataTotals::default()).then(|| r.data.to_proto()),
        }
    }
}

fn overview_proto(o: crate::skills::Overview) -> pb::ListSkillsResponse {
    pb::ListSkillsResponse {
        installed: o.installed,
        offered: o
            .offered
            .into_iter()
            .map(|s| pb::LibrarySkill {
                name: s.name,
                description: s.description,
            })
            .collect(),
    }
}

fn proposal_proto(p: crate::skills::Proposal) -> pb::SkillProposal {
    pb::SkillProposal {
        name: p.name,
        description: p.description,
        agent: p.agent,
        owner: p.owner,
        state: p.state.as_str().to_owned(),
        files: p.files,
    }
}

type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatEvent, Status>> + Send>>;
type NoticeStream = Pin<Box<dyn Stream<Item = Result<pb::AgentNotice, Status>> + Send>>;

fn chat_events(turn: TurnStream) -> ChatStream {
    Box::pin(futures::stream::unfold(Some(turn), |turn| async move {
        let mut turn = turn?;
        let ev = turn.next().await?;
        let item = match ev {
            TurnEvent::Accepted { turn_id } => Ok(Event::Accepted(pb::TurnAccepted { turn_id })),
            TurnEvent::Progress(text) => Ok(Event::Progress(pb::Progress { text })),
            TurnEvent::Chunk { seq, delta } => Ok(Event::Chunk(pb::Chunk { seq, delta })),
            TurnEvent::HandedOver => Err(Status::unavailable(format!(
                "this controller stepped down; resume turn {} on the leader",
                turn.turn_id()
            ))),
            TurnEvent::End(end) if end.outcome == pb::Outcome::NotFound => {
                Err(Status::not_found(end.error))
            }
            TurnEvent::End(end) => Ok(Event::End(pb::TurnEnd {
                outcome: end.outcome as i32,
                error: end.error,
                usage: Some(end.usage),
                chunks: end.chunks,
            })),
        };
        let item = item.map(|e| ChatEvent { event: Some(e) });
        Some((item, Some(turn)))
    }))
}

#[tonic::async_trait]
impl Gateway for GatewayService {
    type ChatStream = ChatStream;
    type WatchNoticesStream = NoticeStream;

    async fn chat(
        &self,
        request: Request<ChatRequest>,
    ) -> Result<Response<Self::ChatStream>, Status> {
        let admin = self.authorize(&request)?;
        let req = request.into_inner();
        let agent = self.agent_id(&req.agent)?;
        let turn = match req.kind {
            Some(Kind::Start(s)) => {
                let spec = TurnSpec {
                    turn_id: (!s.turn_id.is_empty()).then_some(s.turn_id),
                    conversation: if s.conversation.is_empty() {
                        DEFAULT_CONVERSATION.to_owned()
                    } else {
                        s.conversation
                    },
                    text: s.text,
                    reply_target: GATEWAY_REPLY_TARGET.to_vec(),
                };
                self.router.send_turn(&agent, spec).await?
            }
            Some(Kind::Resume(r)) => {
                self.router
                    .resume_turn(&agent, &r.turn_id, r.from_seq)
                    .await?
            }
            None => {
                return Err(Status::invalid_argument(
                    "ChatRequest needs `start` or `resume`",
                ));
            }
        };
        info!(agent = %agent, turn_id = %turn.turn_id(), admin = %admin, "gateway chat");
        Ok(Response::new(chat_events(turn)))
    }

    async fn list_agents(
        &self,
        request: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        self.authorize(&request)?;
        let agents = self.router.runtime().list().await?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: agents.into_iter().map(|a| self.to_proto(a)).collect(),
        }))
    }

    async fn get_agent(
        &self,
        request: Request<pb::GetAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.authorize(&request)?;
        let id = self.agent_id(&request.get_ref().name)?;
        let rec = self
            .router
            .runtime()
            .get(&id)
            .await?
            .ok_or_else(|| Status::not_found(format!("no agent named {id}")))?;
        Ok(Response::new(self.to_proto(rec)))
    }

    async fn provision_agent(
        &self,
        request: Request<pb::ProvisionAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let admin = self.authorize(&request)?;
        let req = request.into_inner();
        let id = self.agent_id(&req.name)?;
        if req.owner.trim().is_empty() {
            return Err(Status::invalid_argument("owner is required"));
        }
        let template = if req.template.is_empty() {
            "default".to_owned()
        } else {
            req.template
        };
        let rec = self
            .router
            .runtime()
            .provision(AgentSpec {
                id: id.clone(),
                owner: req.owner,
                template,
            })
            .await?;
        info!(agent = %id, admin = %admin, "agent provisioned through the gateway");
        Ok(Response::new(self.to_proto(rec)))
    }

    async fn suspend_agent(
        &self,
        request: Request<pb::SuspendAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.authorize(&request)?;
        let id = self.agent_id(&request.get_ref().name)?;
        Ok(Response::new(
            self.to_proto(self.router.runtime().suspend(&id).await?),
        ))
    }

    async fn resume_agent(
        &self,
        request: Request<pb::ResumeAgentRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        self.authorize(&request)?;
        let id = self.agent_id(&request.get_ref().name)?;
        Ok(Response::new(
            self.to_proto(self.router.runtime().resume(&id).await?),
        ))
    }

    async fn deprovision_agent(
        &self,
        request: Request<pb::DeprovisionAgentRequest>,
    ) -> Result<Response<pb::DeprovisionAgentResponse>, Status> {
        let admin = self.authorize(&request)?;
        let req = request.into_inner();
        let id = self.agent_id(&req.name)?;
        self.router
            .runtime()
            .deprovision(&id, req.delete_data)
            .await?;
        info!(agent = %id, admin = %admin, delete_data = req.delete_data, "agent deprovisioned through the gateway");
        Ok(Response::new(pb::DeprovisionAgentResponse {}))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::UsageReport>, Status> {
        self.authorize(&request)?;
        let name = request.get_ref().name.clone();
        let agents = if name.is_empty() {
            self.router.runtime().list().await?
        } else {
            let id = self.agent_id(&name)?;
            vec![
                self.router
                    .runtime()
                    .get(&id)
                    .await?
                    .ok_or_else(|| Status::not_found(format!("no agent named {id}")))?,
            ]
        };
        let by_agent = agents
            .into_iter()
            .map(|a| (a.id.name().to_owned(), a.usage.to_proto()))
            .collect();
        Ok(Response::new(pb::UsageReport { by_agent }))
    }

    async fn list_skills(
        &self,
        request: Request<pb::ListSkillsRequest>,
    ) -> Result<Response<pb::ListSkillsResponse>, Status> {
        self.authorize(&request)?;
        let id = self.agent_id(&request.get_ref().agent)?;
        let o = self.skills()?.overview(&id).await?;
        Ok(Response::new(overview_proto(o)))
    }

    async fn add_skill(
        &self,
        request: Request<pb::AddSkillRequest>,
    ) -> Result<Response<pb::ListSkillsResponse>, Status> {
        let admin = self.authorize(&request)?;
        let req = request.into_inner();
        let id = self.agent_id(&req.agent)?;
        let o = self.skills()?.add(&id, &req.name).await?;
        info!(agent = %id, skill = %req.name, admin = %admin, "library skill added through the gateway");
        Ok(Response::new(overview_proto(o)))
    }

    async fn remove_skill(
        &self,
        request: Request<pb::RemoveSkillRequest>,
    ) -> Result<Response<pb::ListSkillsResponse>, Status> {
        let admin = self.authorize(&request)?;
        let req = request.into_inner();
        let id = self.agent_id(&req.agent)?;
        let o = self.skills()?.remove(&id, &req.name).await?;
        info!(agent = %id, skill = %req.name, admin = %admin, "library skill removed through the gateway");
        Ok(Response::new(overview_proto(o)))
    }

    async fn propose_skill(
        &self,
        request: Request<pb::ProposeSkillRequest>,
    ) -> Result<Response<pb::SkillProposal>, Status> {
        self.authorize(&request)?;
        let req = request.into_inner();
        let id = self.agent_id(&req.agent)?;
        let p = self.skills()?.propose(&id, &req.name).await?;
        Ok(Response::new(proposal_proto(p)))
    }

    async fn list_skill_proposals(
        &self,
        request: Request<pb::ListSkillProposalsRequest>,
    ) -> Result<Response<pb::ListSkillProposalsResponse>, Status> {
        self.authorize(&request)?;
        let proposals = self.skills()?.proposals().await?;
        Ok(Response::new(pb::ListSkillProposalsResponse {
            proposals: proposals.into_iter().map(proposal_proto).collect(),
        }))
    }

    async fn review_skill_proposal(
        &self,
        request: Request<pb::ReviewSkillProposalRequest>,
    ) -> Result<Response<pb::SkillProposal>, Status> {
        let admin = self.authorize(&request)?;
        let req = request.into_inner();
        let p = self.skills()?.review(&req.name, req.approve).await?;
        info!(skill = %req.name, state = p.state.as_str(), admin = %admin, "skill proposal reviewed through the gateway");
        Ok(Response::new(proposal_proto(p)))
    }

    async fn watch_notices(
        &self,
        request: Request<pb::WatchNoticesRequest>,
    ) -> Result<Response<Self::WatchNoticesStream>, Status> {
        let admin = self.authorize(&request)?;
        let id = self.agent_id(&request.get_ref().agent)?;
        let inbox = self.notices.as_ref().ok_or_else(|| {
            Status::failed_precondition(
                "this controller's Slack app delivers notices, to the agent owner's DM",
            )
        })?;
        if self.router.runtime().get(&id).await?.is_none() {
            return Err(Status::not_found(format!("no agent named {id}")));
        }
        let rx = inbox
            .follow(id.clone())
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        info!(agent = %id, admin = %admin, "following notices");
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            let n = rx.recv().await?;
            let notice = pb::AgentNotice {
                agent: n.agent.name().to_owned(),
                notice_id: n.notice_id,
                conversation: n.conversation,
                text: n.text,
            };
            Some((Ok(notice), rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
