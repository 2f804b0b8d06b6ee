package httpapi

func (s *Server) registerRestores() {}
