package httpapi

func (s *Server) registerBackups() {}
