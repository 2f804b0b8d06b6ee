package httpapi

func (s *Server) registerAgents() {}
